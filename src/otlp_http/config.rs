//! What to push to, and how: the endpoints, protocol, headers, timeouts
//! and certificates of an OTLP/HTTP push, from tal's flags and the OTel
//! environment variables, checked at start so that a push never begins
//! with a setting it cannot honour. Apart from the client
//! (`super`), which only sends what this resolved.
//!
//! Configuration, as the OTel specification defines the variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT` (used as
//! given) override the base endpoint, which is `--otlp-endpoint URL`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the signal paths are appended);
//! `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,…`, percent-decoded) are sent with
//! every request. `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL` /
//! `…_METRICS_PROTOCOL`) chooses the body: `http/protobuf` (the default)
//! or `http/json` (the same requests as OTLP JSON, `application/json`, the
//! answer read as JSON too). `grpc` is refused at start with what to do
//! instead: tal has no HTTP/2 client (it would take an async runtime into
//! an agent that has none), and every OTLP receiver (the Collector, Tempo,
//! Jaeger, Prometheus's OTLP endpoint) takes OTLP/HTTP too. A request that
//! cannot reach port 4317, OTLP/gRPC's, says so in its error. `https://` endpoints are checked against the public
//! (Mozilla) roots, or against the certificates of the PEM file
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` (a site's own CA, or a receiver's
//! self-signed certificate). No proxy is used, and no redirect followed.
//!
//! Start-up checks: endpoint URLs are parsed strictly ([`parse_url`]),
//! header names and values must be what HTTP allows, and the certificate
//! file is read only for `https://`, only a regular file, and at most
//! [`MAX_CERTIFICATE_BYTES`]; each failure is refused before anything is
//! read or sent, and no message shows a URL's credentials or a header's
//! value.

use crate::otlp::parse_key_values;
use std::io;
use std::time::Duration;

/// An `http://` or `https://` `host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`.
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    /// The request path.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// `s` with any credentials (`user:password@`) of a URL in it replaced by
/// `***@`, for messages: tal never prints a password.
pub fn redact_url(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(i) = s.find("://").map(|i| i + 3) else {
        return s.into();
    };
    // Up to the last `@` of the authority (a password may hold `/`, `?`
    // or `#` too: everything before the last `@` is redacted).
    match s[i..].rfind('@') {
        Some(at) => format!("{}***{}", &s[..i], &s[i + at..]).into(),
        None => s.into(),
    }
}

/// Parses an `http://` or `https://` URL (the port defaults to 80 or 443).
///
/// Refused, with what to do instead: credentials in the URL (`user:pw@`;
/// tal would not send them, and never prints them: pass them as a header),
/// a query or fragment (an OTLP endpoint has neither; tal appends the
/// signal paths), a port outside 1..=65535, and spaces or control
/// characters anywhere.
pub fn parse_url(s: &str) -> Result<HttpUrl, String> {
    let shown = crate::term::escape_for_terminal(&redact_url(s), 300).into_owned();
    let (tls, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{shown}: an OTLP/HTTP endpoint looks like http://host:4318 or https://host:4318"
            ))
        }
    };
    if rest.contains('@') {
        return Err(format!(
            "{shown}: credentials in an endpoint URL are not sent; remove them and pass them \
             as a header instead, e.g. OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20<base64>"
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{shown}: spaces or control characters in the URL"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = (&rest[..end], &rest[end..]);
    if path.contains(['?', '#']) {
        return Err(format!(
            "{shown}: an OTLP endpoint has no query (?...) or fragment (#...); give \
             scheme://host:port[/path] only"
        ));
    }
    let path = if path.is_empty() { "/" } else { path };
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (&authority[..h.len() + 2], None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (&authority[..h.len() + 2], Some(p)),
                None => return Err(format!("{shown}: expected :port after ]")),
            },
            None => return Err(format!("{shown}: an IPv6 address has no closing ]")),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{shown}: no host"));
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "{shown}: the port must be a number from 1 to 65535 (an OTLP/HTTP \
                     receiver's is usually 4318)"
                ))
            }
        },
    };
    Ok(HttpUrl {
        tls,
        authority: format!("{host}:{port}"),
        path: path.to_string(),
    })
}

/// The most `OTEL_EXPORTER_OTLP_CERTIFICATE` may hold: a PEM bundle of a
/// site's CAs is a few hundred KiB at most (all of Mozilla's roots are
/// about 250 KiB).
pub const MAX_CERTIFICATE_BYTES: u64 = 4 << 20;

/// The certificates of `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file): the
/// roots `https://` receivers are checked against instead of the public
/// ones.
///
/// Read only when an endpoint is `https://`, only if it is a regular file
/// (a FIFO or a device such as `/dev/zero` is refused before it is
/// opened, and the opened file is checked again, opened non-blocking so
/// that a FIFO swapped in meanwhile cannot block), and only up to
/// [`MAX_CERTIFICATE_BYTES`].
pub(super) fn load_roots(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let var = "OTEL_EXPORTER_OTLP_CERTIFICATE";
    let shown = crate::term::escape_for_terminal(path, 300);
    let cannot = |e: io::Error| format!("{var}={shown}: cannot read it: {e}");
    let not_file = || {
        format!("{var}={shown}: not a regular file; give a PEM file of the receiver's certificate or CA")
    };
    let too_big = || {
        format!(
            "{var}={shown}: larger than {} MiB, too big for a PEM file of certificates",
            MAX_CERTIFICATE_BYTES >> 20
        )
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_file());
    }
    if meta.len() > MAX_CERTIFICATE_BYTES {
        return Err(too_big());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(not_file());
    }
    let mut pem = Vec::new();
    file.take(MAX_CERTIFICATE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(cannot)?;
    if pem.len() as u64 > MAX_CERTIFICATE_BYTES {
        return Err(too_big());
    }
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{var}={shown}: not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{var}={shown}: no certificate in it"));
    }
    Ok(certs)
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, checked: each name an HTTP token and
/// each value visible ASCII (after percent-decoding), or the whole
/// variable is refused at start, naming the header but never its value
/// (it is often a secret).
pub(super) fn check_headers(
    headers: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let var = "OTEL_EXPORTER_OTLP_HEADERS";
    for (k, v) in &headers {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if k.is_empty() || !k.bytes().all(token) {
            return Err(format!(
                "{var}: {:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                crate::term::escape_for_terminal(k, 100)
            ));
        }
        if !v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "{var}: the value of header {k} holds control or non-ASCII characters, \
                 which HTTP does not allow; percent-encode the bytes the receiver expects"
            ));
        }
    }
    Ok(headers)
}

/// How a signal's requests are encoded (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `http/protobuf`: binary protobuf, `application/x-protobuf`.
    #[default]
    Protobuf,
    /// `http/json`: OTLP JSON, `application/json`.
    Json,
}

impl Protocol {
    /// The value of `var`, as the OTel specification names them.
    pub fn parse(var: &str, value: &str) -> Result<Self, String> {
        match value.trim() {
            "http/protobuf" => Ok(Self::Protobuf),
            "http/json" => Ok(Self::Json),
            "grpc" => Err(format!(
                "{var}=grpc: tal pushes OTLP over HTTP, not gRPC; point the endpoint at the \
                 receiver's OTLP/HTTP port (a Collector's is 4318, not 4317) and unset {var} \
                 or set it to http/protobuf"
            )),
            other => Err(format!(
                "{var}={other}: expected http/protobuf (the default) or http/json"
            )),
        }
    }

    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Traces URL.
    pub traces: HttpUrl,
    /// Metrics URL.
    pub metrics: HttpUrl,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The encoding of traces and of metrics requests.
    pub protocols: (Protocol, Protocol),
    /// Each request's whole time limit (connect, send, answer), traces and
    /// metrics: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` /
    /// `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds, as the OTel specification has it); unset: the push's
    /// own (10 s; 2 s for the last push of `tal record`).
    pub timeouts: (Option<Duration>, Option<Duration>),
    /// The roots `https://` receivers are checked against
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); `None`: the public (Mozilla)
    /// roots.
    pub roots: Option<Vec<ureq::tls::Certificate<'static>>>,
}

impl Endpoints {
    /// From `--otlp-endpoint` (`base`) and the OTel environment variables.
    pub fn resolve(base: Option<&str>) -> Result<Self, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let base = base
            .map(String::from)
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let signal = |var: &str, path: &str| -> Result<HttpUrl, String> {
            match (env(var), &base) {
                (Some(u), _) => parse_url(u.trim()),
                (None, Some(b)) => {
                    let mut u = parse_url(b.trim())?;
                    u.path = format!("{}{path}", u.path.trim_end_matches('/'));
                    Ok(u)
                }
                (None, None) => Err(format!(
                    "no OTLP endpoint: pass --otlp-endpoint http://host:4318 (or https://) or set OTEL_EXPORTER_OTLP_ENDPOINT (or {var})"
                )),
            }
        };
        let ms = |k: &str| -> Result<Option<Duration>, String> {
            match env(k) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(Duration::from_millis(n))),
                    _ => Err(format!(
                        "{k}={v}: expected a whole number of milliseconds above 0"
                    )),
                },
            }
        };
        let all = ms("OTEL_EXPORTER_OTLP_TIMEOUT")?;
        let protocol = |k: &str| env(k).map(|v| Protocol::parse(k, &v)).transpose();
        let any = protocol("OTEL_EXPORTER_OTLP_PROTOCOL")?;
        let protocols = (
            protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")?
                .or(any)
                .unwrap_or_default(),
            protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")?
                .or(any)
                .unwrap_or_default(),
        );
        let traces = signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")?;
        let metrics = signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics")?;
        // Only an `https://` receiver is checked against it: for `http://`
        // the file is not even opened.
        let roots = match env("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            Some(p) if traces.tls || metrics.tls => Some(load_roots(p.trim())?),
            _ => None,
        };
        Ok(Self {
            traces,
            metrics,
            headers: check_headers(
                env("OTEL_EXPORTER_OTLP_HEADERS")
                    .map(|h| parse_key_values(&h))
                    .unwrap_or_default(),
            )?,
            protocols,
            timeouts: (
                ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")?.or(all),
                ms("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")?.or(all),
            ),
            roots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://collector:4318").unwrap(),
            HttpUrl {
                tls: false,
                authority: "collector:4318".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            parse_url("http://h/otlp/v1/traces").unwrap(),
            HttpUrl {
                tls: false,
                authority: "h:80".into(),
                path: "/otlp/v1/traces".into()
            }
        );
        let u = parse_url("https://h/v1/metrics").unwrap();
        assert_eq!((u.tls, u.authority.as_str()), (true, "h:443"));
        assert_eq!(u.to_string(), "https://h:443/v1/metrics");
        assert!(parse_url("ftp://h:4318").unwrap_err().contains("https://"));
        assert!(parse_url("h:4318").is_err());
        assert!(parse_url("http://").is_err());
        let u = parse_url("http://[::1]:4318/x").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("[::1]:4318", "/x")
        );
        assert_eq!(parse_url("https://[::1]").unwrap().authority, "[::1]:443");
    }

    /// URLs that once became nonsense (`…#f:80/v1/traces`, `h:99999:80`)
    /// or echoed a password are refused, clearly, without the password.
    #[test]
    fn hostile_urls_are_refused_and_credentials_never_shown() {
        for (url, says) in [
            ("http://h:4318?x=1#f", "query"),
            ("http://h:4318/p?x=1", "query"),
            ("http://h#f", "query"),
            ("http://h:99999", "1 to 65535"),
            ("http://h:0", "1 to 65535"),
            ("http://h:+80", "1 to 65535"),
            ("http://h:", "1 to 65535"),
            ("http://h:80:81", "1 to 65535"),
            ("http://:4318", "no host"),
            ("http://[::1", "]"),
            ("http://h:4318/a b", "spaces"),
            ("http://h:4318/\x1b[2J", "control"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains('\x1b'), "{e:?}");
        }
        for url in [
            "http://user:s3cret@h:4318",
            "https://user:s3cret@h",
            "http://user:s3/cr?et@h:4318/v1",
            "ftp://user:s3cret@h",
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(!e.contains("s3"), "{url}: {e}");
            assert!(e.contains("***@"), "{url}: {e}");
        }
        assert_eq!(redact_url("http://a:b@h:1/x"), "http://***@h:1/x");
        assert_eq!(redact_url("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn header_names_and_values_are_checked_up_front() {
        let h = |k: &str, v: &str| check_headers(vec![(k.into(), v.into())]);
        assert!(h("Authorization", "Bearer abc=").is_ok());
        let e = h("x-token", "se\r\ncret").unwrap_err();
        assert!(e.contains("x-token") && !e.contains("se"), "{e}");
        assert!(h("x-token", "caf\u{e9}").is_err());
        assert!(h("bad name", "v").is_err());
        assert!(h("", "v").is_err());
        assert!(h("a:b", "v").is_err());
    }

    #[test]
    fn a_certificate_file_is_read_only_if_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_roots("/dev/zero").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let t0 = Instant::now();
        let e = load_roots(fifo.to_str().unwrap()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_CERTIFICATE_BYTES + 1)
            .unwrap();
        let e = load_roots(big.to_str().unwrap()).unwrap_err();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && e.contains("4 MiB"),
            "{e}"
        );
    }
}
