//! `keygate sign`: the command-line face of the signer. Reads the secret file, the
//! body (`-d`, curl's way) and the clock and randomness, calls `sign`, and prints the
//! headers to add or a ready curl command.

use std::io::Read as _;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{SignError, SignOptions, SignRequest, fresh_nonce, sign};
use crate::scheme::SchemeKind;

/// `keygate sign`: print the headers (or a curl command) that make a request pass.
#[derive(clap::Args, Debug, Clone)]
pub struct SignArgs {
    /// aliyun, tencent, bkapi, sigv4, rfc9421 or appcode.
    #[arg(long)]
    pub scheme: SchemeKind,
    /// AppKey (bkapi: app code; ignored for appcode).
    #[arg(long, default_value = "")]
    pub key: String,
    /// File holding the AppSecret (or the AppCode); `-` reads standard input. One
    /// trailing newline is removed.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// HTTP method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,
    /// Extra header, `Name: value` (repeatable); signed where the scheme signs headers.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Body, or `@file` (read like curl -d: CR and LF removed).
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub data: Option<String>,
    /// Print a ready curl command line instead of headers.
    #[arg(long)]
    pub curl: bool,
    /// sigv4 region (default: the host's second label).
    #[arg(long)]
    pub region: Option<String>,
    /// sigv4 service (default: the host's first label).
    #[arg(long)]
    pub service: Option<String>,
    /// aliyun HmacSHA256|HmacSHA1; tencent hmac-sha1|256|384|512; bkapi header|signature.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// sigv4: print a presigned URL valid for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub presign: Option<u32>,
    /// tencent: sign the path without its /release, /test or /prepub prefix.
    #[arg(long)]
    pub strip_env_prefix: bool,
    /// Absolute URL of the request.
    pub url: String,
}

fn read_source(path: &str) -> Result<Vec<u8>, SignError> {
    let io = |source| SignError::Io {
        path: path.to_owned(),
        source,
    };
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(io)?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(io)
    }
}

fn parse_header_arg(h: &str) -> Result<(String, String), SignError> {
    let (n, v) = h
        .split_once(':')
        .ok_or_else(|| SignError::Header(h.to_owned()))?;
    let n = n.trim();
    if n.is_empty() {
        return Err(SignError::Header(h.to_owned()));
    }
    Ok((n.to_owned(), v.trim().to_owned()))
}

/// Quotes one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `keygate sign`: returns the text to print.
pub fn run(args: &SignArgs) -> Result<String, SignError> {
    let path = args.secret_file.to_string_lossy().into_owned();
    if path == "-" && args.data.as_deref() == Some("@-") {
        return Err(SignError::Invalid(
            "the secret and the body cannot both come from standard input".into(),
        ));
    }
    let mut secret = Zeroizing::new(read_source(&path)?);
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    let body = match args.data.as_deref() {
        None => None,
        Some(d) => match d.strip_prefix('@') {
            Some(file) => Some(
                read_source(file)?
                    .into_iter()
                    .filter(|b| *b != b'\r' && *b != b'\n')
                    .collect(),
            ),
            None => Some(d.as_bytes().to_vec()),
        },
    };
    let default_method = if body.is_some() { "POST" } else { "GET" };
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| default_method.to_owned())
        .to_ascii_uppercase();
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header_arg(h))
        .collect::<Result<Vec<_>, _>>()?;
    let req = SignRequest {
        method: method.clone(),
        url: args.url.clone(),
        headers,
        body,
    };
    let nonce = fresh_nonce()?;
    let mut opts = SignOptions::new(
        args.scheme,
        &args.key,
        &secret,
        crate::clock::system_now_ms(),
        &nonce,
    );
    opts.algorithm = args.algorithm.as_deref();
    opts.region = args.region.as_deref();
    opts.service = args.service.as_deref();
    opts.presign_expires_s = args.presign;
    opts.tencent_strip_env_prefix = args.strip_env_prefix;
    let signed = sign(&req, &opts)?;

    let mut out = String::new();
    if args.curl {
        out.push_str("curl");
        if method != default_method {
            out.push_str(" -X ");
            out.push_str(&shell_quote(&method));
        }
        for h in args
            .headers
            .iter()
            .cloned()
            .chain(signed.headers.iter().map(|(n, v)| format!("{n}: {v}")))
        {
            out.push_str(" -H ");
            out.push_str(&shell_quote(&h));
        }
        if let Some(d) = &args.data {
            out.push_str(" -d ");
            out.push_str(&shell_quote(d));
        }
        out.push(' ');
        out.push_str(&shell_quote(&signed.url));
        out.push('\n');
    } else {
        if signed.url != args.url {
            out.push_str(&signed.url);
            out.push('\n');
        }
        // Every header the request must carry: the caller's own (some are signed, e.g.
        // listed in X-Ca-Signature-Headers) and the ones signing adds.
        for (n, v) in req.headers.iter().chain(&signed.headers) {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        }
    }
    Ok(out)
}
