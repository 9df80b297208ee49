//! The wire shapes of `Authorization/Check` that keygate reads and writes.
//!
//! Owns: the slice of Envoy's `CheckRequest` the gRPC door reads (prost messages with
//! Envoy's field numbers), the `CheckResponse` it writes (`Response::encode`, straight
//! from borrowed strings), and the tonic codec that carries both. Wire-compatible with
//! `envoy.service.auth.v3` (the door's tests read one as the other), and cheaper on
//! every Check than the generated types:
//! - a `map<string, string>` is read as its wire form, a repeated key/value entry, into
//!   a `Vec` (no hashing, no table to grow); the door applies protobuf's "last key
//!   wins" rule itself;
//! - fields keygate never reads (`destination`, `time`, `tls_session`, metadata,
//!   `query`, ...) are skipped without being built;
//! - the message is decoded from one contiguous slice of the received frame;
//! - the answer is written in one pass into one buffer (no message tree, no
//!   `Struct` map, no length computed twice).

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// One entry of a protobuf `map<string, string>` (field 1 key, field 2 value).
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`: source peer, request, context extensions.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// `map<string, string> context_extensions = 10`.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
}

/// `AttributeContext.Peer`: only its address.
#[derive(Clone, PartialEq, Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// `envoy.config.core.v3.Address`: only the `socket_address` member of its oneof.
#[derive(Clone, PartialEq, Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

/// `envoy.config.core.v3.SocketAddress`: address and, when it is a number, the port.
#[derive(Clone, PartialEq, Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
    /// `port_value`, a member of a oneof: absent and 0 differ.
    #[prost(uint32, optional, tag = "3")]
    pub port_value: Option<u32>,
}

/// `AttributeContext.Request`: only its HTTP part.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct HttpRequest {
    #[prost(string, tag = "2")]
    pub method: String,
    /// `map<string, string> headers = 3`.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    #[prost(string, tag = "6")]
    pub scheme: String,
    #[prost(string, tag = "11")]
    pub body: String,
    #[prost(bytes = "vec", tag = "12")]
    pub raw_body: Vec<u8>,
    /// Set instead of `headers` when Envoy's `encode_raw_headers` is on.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// A `CheckResponse`, borrowed from the decision it answers.
pub struct Response<'a> {
    /// `status.code` (a gRPC code: 0 allows).
    pub code: i32,
    /// `status.message`.
    pub message: &'a str,
    pub http: Http<'a>,
    /// `dynamic_metadata`, string values only, names unique; a field whose value is
    /// `None` is left out.
    pub metadata: &'a [(&'a str, Option<&'a str>)],
}

/// `CheckResponse.http_response`.
pub enum Http<'a> {
    /// `ok_response`: headers to set (overwriting), headers and query parameters to
    /// remove.
    Ok {
        headers: &'a [(String, String)],
        headers_to_remove: &'a [String],
        query_parameters_to_remove: &'a [String],
    },
    /// `denied_response`: the status, headers and body the client gets.
    Denied {
        status: u16,
        headers: &'a [(String, String)],
        body: &'a str,
    },
}

/// `envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD`.
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

impl Response<'_> {
    /// The message's bytes, as the generated `CheckResponse` would encode them.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(512));
        // status: google.rpc.Status { code = 1, message = 2 }
        w.message(1, |w| {
            w.int32(1, self.code);
            w.string(2, self.message);
        });
        match &self.http {
            Http::Denied {
                status,
                headers,
                body,
            } => w.message(2, |w| {
                // DeniedHttpResponse { status = 1 (HttpStatus { code = 1 }), headers = 2, body = 3 }
                w.message(1, |w| w.int32(1, i32::from(*status)));
                w.headers(2, headers);
                w.string(3, body);
            }),
            Http::Ok {
                headers,
                headers_to_remove,
                query_parameters_to_remove,
            } => w.message(3, |w| {
                // OkHttpResponse { headers = 2, headers_to_remove = 5, query_parameters_to_remove = 8 }
                w.headers(2, headers);
                for h in headers_to_remove.iter() {
                    w.string_always(5, h);
                }
                for q in query_parameters_to_remove.iter() {
                    w.string_always(8, q);
                }
            }),
        }
        // dynamic_metadata = 4: Struct { map<string, Value> fields = 1 }, each value a
        // Value { string_value = 3 } (a oneof member: written even when empty).
        w.message(4, |w| {
            for (k, v) in self.metadata {
                let Some(v) = v else { continue };
                w.message(1, |w| {
                    w.string(1, k);
                    w.message(2, |w| w.string_always(3, v));
                });
            }
        });
        w.0
    }
}

/// Protobuf wire writing into one buffer. A nested message's length is backfilled
/// once its contents are written: one byte is kept for it, and the contents move only
/// in the rare case they reach 128 bytes and the length needs more.
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, v: u64) {
        prost::encoding::encode_varint(v, &mut self.0);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire_type)));
    }

    /// A proto3 `int32`: left out when 0, negatives sign-extended to ten bytes.
    fn int32(&mut self, field: u32, v: i32) {
        if v != 0 {
            self.key(field, 0);
            self.varint(i64::from(v) as u64);
        }
    }

    /// A proto3 `string`: left out when empty.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.string_always(field, s);
        }
    }

    /// A repeated or oneof `string`: written even when empty.
    fn string_always(&mut self, field: u32, s: &str) {
        self.key(field, 2);
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn message(&mut self, field: u32, contents: impl FnOnce(&mut Self)) {
        self.key(field, 2);
        let at = self.0.len();
        self.0.push(0);
        contents(self);
        let len = self.0.len() - at - 1;
        match u8::try_from(len) {
            Ok(short) if short < 0x80 => self.0[at] = short,
            _ => {
                let mut prefix = Vec::with_capacity(10);
                prost::encoding::encode_varint(len as u64, &mut prefix);
                self.0.splice(at..=at, prefix);
            }
        }
    }

    /// `repeated HeaderValueOption` that overwrite: `{ header = 1 (HeaderValue { key
    /// = 1, value = 2 }), append_action = 3 }`. `append` (deprecated) stays unset:
    /// `append_action` overwrites on every Envoy version that has it, so a client can
    /// never smuggle its own copy of an identity header past us.
    fn headers(&mut self, field: u32, headers: &[(String, String)]) {
        for (k, v) in headers {
            self.message(field, |w| {
                w.message(1, |w| {
                    w.string(1, k);
                    w.string(2, v);
                });
                w.int32(3, OVERWRITE_IF_EXISTS_OR_ADD);
            });
        }
    }
}

/// An encoded `CheckResponse` on its way to the codec.
pub struct Encoded(pub Vec<u8>);

/// The Check method's tonic codec: `check_wire` messages both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = Encoded;
    type Decode = CheckRequest;
    type Encoder = CheckCodec;
    type Decoder = CheckCodec;

    fn encoder(&mut self) -> Self::Encoder {
        CheckCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckCodec
    }
}

impl Encoder for CheckCodec {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for CheckCodec {
    type Item = CheckRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckRequest>, Status> {
        // One contiguous slice (a view of the frame, not a copy): prost reads a slice
        // far faster than a chained buffer.
        let message = src.copy_to_bytes(src.remaining());
        CheckRequest::decode(message.as_ref())
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
