//! Which failed etcd requests may be sent again.
//!
//! Owns: telling a request that could not connect apart from one that may have been
//! applied, and a member's passing refusal (no leader, during an election) apart from
//! its answer. The client balances every request over all endpoints, and an endpoint
//! that has not answered since the client was made (a member down at start, or not
//! listening yet) stays in the pool and fails each request it is given with a connect
//! error (etcd-client issue #39). Without another attempt, one member down (or an
//! election under way) fails a replica's start, or a share of its writes, though the
//! cluster has its quorum.

use std::io::ErrorKind;

/// Whether `e` failed while connecting to the member, before the request was sent:
/// sending it again cannot apply it twice.
pub(super) fn never_sent(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable => {
            std::error::Error::source(s)
        }
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        _ => None,
    };
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            );
        }
        source = err.source();
    }
    false
}

/// Whether a request that is safe to apply twice (a read, or a transaction whose
/// guard refuses a second application) may be sent again after `e`: it never left,
/// or a member refused it for now (`UNAVAILABLE`: no leader, leader changed).
pub(super) fn passing(e: &etcd_client::Error) -> bool {
    never_sent(e)
        || matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port nothing listens on: bound, then let go.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_request_never_sent() {
        let ep = format!("http://127.0.0.1:{}", closed_port());
        let mut client = etcd_client::Client::connect([ep], None)
            .await
            .expect("the client connects lazily");
        let e = client.get("k", None).await.expect_err("nothing listens");
        assert!(never_sent(&e), "{e:?}");
        assert!(passing(&e), "{e:?}");
    }

    #[test]
    fn an_answer_from_a_member_was_sent_and_only_unavailable_passes() {
        let answer = |code| {
            etcd_client::Error::GRpcStatus(tonic::Status::new(code, "etcdserver: no leader"))
        };
        assert!(!never_sent(&answer(tonic::Code::Unavailable)));
        assert!(passing(&answer(tonic::Code::Unavailable)));
        for code in [tonic::Code::DeadlineExceeded, tonic::Code::InvalidArgument] {
            assert!(!never_sent(&answer(code)));
            assert!(!passing(&answer(code)));
        }
        assert!(!passing(&etcd_client::Error::InvalidArgs("x".into())));
    }
}
