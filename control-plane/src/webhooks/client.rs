//! The HTTP client that delivers webhooks to receivers that may be hostile: every address it
//! connects to passes an SSRF policy, redirects are never followed, and bodies are read only up
//! to a cap.
//!
//! The policy ([`refused_reason`]) refuses loopback, private, link-local, shared (CGNAT),
//! multicast, reserved and cloud metadata addresses, and the IPv6 forms that embed such an IPv4
//! address. An operator allowlist of [`Cidr`]s overrides it (for receivers inside the network),
//! and plain `http` is allowed only to allowlisted addresses.
//!
//! The check sits where the connection is made, so DNS rebinding cannot pass it: a custom
//! resolver resolves each host when reqwest opens a connection and hands back only the allowed
//! addresses, which are then the ones connected to. URLs whose host is an IP literal skip the
//! resolver inside reqwest, so [`DeliveryClient::post`] checks those itself before sending.
//! Proxies are disabled, as a proxy would resolve the host itself.
//!
//! Error messages leave out the URL, whose query string often carries a receiver's token.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// What [`DeliveryClient::post`] sends as `user-agent` unless the caller gives one.
const USER_AGENT: &str = concat!("lanewatch-webhooks/", env!("CARGO_PKG_VERSION"));

/// Why a delivery attempt produced no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The SSRF address policy refused the receiver's address; nothing was connected to.
    #[error("delivery refused by the address policy: {reason}")]
    Refused { reason: String },
    /// The URL does not parse, has no host, or is not http(s).
    #[error("invalid receiver url: {reason}")]
    InvalidUrl { reason: String },
    /// A header name or value given to [`DeliveryClient::post`] is not valid HTTP.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    /// Connecting (`what` = "connect") or the whole exchange (`what` = "request") ran past its
    /// limit.
    #[error("receiver did not answer within the {limit:?} {what} timeout")]
    Timeout { what: &'static str, limit: Duration },
    /// Name resolution or the TCP/TLS connection failed.
    #[error("could not connect to the receiver: {message}")]
    Connect { message: String },
    /// Anything else: the connection broke mid-exchange, a malformed response, a client that
    /// could not be built.
    #[error("delivery failed: {message}")]
    Other { message: String },
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status; a 3xx is not followed and counts like any other non-2xx.
    pub status: u16,
    /// The start of the response body: at most `max_body_bytes` bytes, decoded as lossy UTF-8
    /// (a character cut at the cap shows as U+FFFD). The rest is never read.
    pub body_snippet: String,
    /// From sending the request until the snippet was read.
    pub latency: Duration,
}

/// How a [`DeliveryClient`] connects and what it may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit on name resolution plus the TCP and TLS handshakes.
    pub connect_timeout: Duration,
    /// Limit on the whole exchange, from connecting to the last byte of the snippet read.
    pub timeout: Duration,
    /// How much of a response body is read at most.
    pub max_body_bytes: usize,
    /// Receivers inside these ranges are allowed although the policy refuses them, and may be
    /// reached over plain http.
    pub allow: Vec<Cidr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_body_bytes: 4096,
            allow: Vec::new(),
        }
    }
}

/// An IPv4 or IPv6 address range such as `10.0.0.0/8` or `::1/128`; a bare address is a range
/// of one. Host bits below the prefix are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cidr {text:?}: {reason}")]
pub struct CidrError {
    text: String,
    reason: &'static str,
}

impl Cidr {
    /// Parses `address/prefix` or a bare address.
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let error = |reason| CidrError { text: text.to_owned(), reason };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| error("not an ip address before the prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => {
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error("prefix length is not a number"));
                }
                let prefix: u8 = prefix.parse().map_err(|_| error("prefix length is too long"))?;
                if prefix > max {
                    return Err(error(if max == 32 {
                        "prefix length exceeds 32 for ipv4"
                    } else {
                        "prefix length exceeds 128 for ipv6"
                    }));
                }
                prefix
            }
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` lies in this range; an address of the other family never does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4 ranges refused, most specific first so that the more telling reason wins.
const REFUSED_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 32, "unspecified address"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast address"),
    (Ipv4Addr::new(169, 254, 169, 254), 32, "cloud metadata endpoint"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" range 0.0.0.0/8"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private network"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private network"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private network"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade nat shared range 100.64.0.0/10"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "ietf protocol assignments 192.0.0.0/24"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation range"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation range"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation range"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking range"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved range 240.0.0.0/4"),
];

/// IPv6 ranges refused outright, most specific first. The ranges that embed an IPv4 address
/// are handled in `refused_v6`.
const REFUSED_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified address"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), 128, "cloud metadata endpoint"),
    (Ipv6Addr::new(0x0064, 0xff9b, 0x0001, 0, 0, 0, 0, 0), 48, "local-use nat64 range 64:ff9b:1::/48"),
    (Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0), 64, "discard-only range 100::/64"),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "teredo tunnel range 2001::/32"),
    (Ipv6Addr::new(0x2001, 0x0002, 0, 0, 0, 0, 0, 0), 48, "benchmarking range"),
    (Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32, "documentation range"),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local (private) address"),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// Why the SSRF policy refuses to connect to `ip`, or `None` where it may. The operator
/// allowlist is not consulted here; [`DeliveryClient`] applies it on top.
///
/// IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are refused when the IPv4 address is,
/// with its reason.
pub fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => refused_v4(ip),
        IpAddr::V6(ip) => refused_v6(ip),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    REFUSED_V4
        .iter()
        .find(|(net, prefix, _)| Cidr { addr: IpAddr::V4(*net), prefix: *prefix }.contains(IpAddr::V4(ip)))
        .map(|(_, _, reason)| *reason)
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let within = |net: Ipv6Addr, prefix: u8| Cidr { addr: IpAddr::V6(net), prefix }.contains(IpAddr::V6(ip));
    if let Some((_, _, reason)) = REFUSED_V6.iter().find(|(net, prefix, _)| within(*net, *prefix)) {
        return Some(reason);
    }
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let embeds_low_v4 = within(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) // ipv4-mapped
        || within(Ipv6Addr::UNSPECIFIED, 96) // ipv4-compatible (deprecated)
        || within(Ipv6Addr::new(0x0064, 0xff9b, 0, 0, 0, 0, 0, 0), 96); // nat64 well-known prefix
    if embeds_low_v4 {
        return refused_v4(low_v4);
    }
    if within(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        // 6to4: the IPv4 address follows the 16-bit prefix
        return refused_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// The policy one of the two inner clients applies to every address it would connect to.
#[derive(Debug, Clone)]
struct AddressPolicy {
    allow: Arc<[Cidr]>,
    /// Plain http: only allowlisted addresses pass.
    plain_http: bool,
}

impl AddressPolicy {
    fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        // `::ffff:a.b.c.d` reaches a.b.c.d, so an IPv4 allowlist entry covers it too
        let canonical = ip.to_canonical();
        if self.allow.iter().any(|cidr| cidr.contains(ip) || cidr.contains(canonical)) {
            return Ok(());
        }
        if let Some(reason) = refused_reason(ip) {
            return Err(reason);
        }
        if self.plain_http {
            return Err("plain http is allowed only to allowlisted addresses");
        }
        Ok(())
    }

    /// The allowed subset of `host`'s resolved addresses, or the refusal naming each address
    /// and why when none is allowed.
    fn filter(&self, host: &str, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, PolicyRefusal> {
        let mut allowed = Vec::new();
        let mut refused = Vec::new();
        for addr in resolved {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(reason) => refused.push(format!("{} ({reason})", addr.ip())),
            }
        }
        if allowed.is_empty() {
            refused.dedup();
            return Err(PolicyRefusal {
                message: format!("host {host} resolves only to refused addresses: {}", refused.join(", ")),
            });
        }
        if !refused.is_empty() {
            tracing::debug!(host, refused = %refused.join(", "), "webhook receiver addresses skipped");
        }
        Ok(allowed)
    }
}

/// The resolver's refusal; found again in the reqwest error's source chain by
/// `DeliveryClient::classify`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct PolicyRefusal {
    message: String,
}

/// Resolves with the system resolver and returns only the addresses the policy allows.
struct PolicyResolver {
    policy: AddressPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("failed to resolve host {host}: {e}"))?
                .collect();
            if resolved.is_empty() {
                return Err(format!("host {host} resolved to no address").into());
            }
            let allowed = policy.filter(&host, resolved)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Posts webhook deliveries under the address policy; cheap to clone.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    https: reqwest::Client,
    http: reqwest::Client,
    https_policy: AddressPolicy,
    http_policy: AddressPolicy,
    options: ClientOptions,
}

impl DeliveryClient {
    /// Builds the client. TLS uses rustls with the system's root certificates and the
    /// process's default crypto provider, which must be installed first (`main.rs` installs
    /// ring); without one this is an error rather than reqwest's panic.
    pub fn new(options: ClientOptions) -> Result<Self, DeliveryError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(DeliveryError::Other {
                message: "no rustls crypto provider is installed for the process; \
                          install one at start-up before building the webhook client"
                    .to_owned(),
            });
        }
        let allow: Arc<[Cidr]> = options.allow.clone().into();
        let https_policy = AddressPolicy { allow: allow.clone(), plain_http: false };
        let http_policy = AddressPolicy { allow, plain_http: true };
        Ok(Self {
            https: build_inner(&options, https_policy.clone(), true)?,
            http: build_inner(&options, http_policy.clone(), false)?,
            https_policy,
            http_policy,
            options,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// POSTs `body` with `headers` to `url` and reads at most `max_body_bytes` of the answer.
    /// Any HTTP status, 3xx included, is an `Ok`; an `Err` means no response arrived.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response, DeliveryError> {
        let url =
            reqwest::Url::parse(url).map_err(|e| DeliveryError::InvalidUrl { reason: e.to_string() })?;
        let (client, policy) = match url.scheme() {
            "https" => (&self.https, &self.https_policy),
            "http" => (&self.http, &self.http_policy),
            other => {
                return Err(DeliveryError::InvalidUrl {
                    reason: format!("scheme {other:?} is not http or https"),
                });
            }
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| DeliveryError::InvalidUrl { reason: "url has no host".to_owned() })?;
        // an IP literal never reaches the resolver (hyper connects to it directly): check here,
        // parsing the host the way hyper does
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            policy.check(ip).map_err(|reason| DeliveryError::Refused {
                reason: format!("address {ip} is refused: {reason}"),
            })?;
        }
        let mut header_map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let invalid = |reason| DeliveryError::InvalidHeader { name: (*name).to_owned(), reason };
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("not a valid name"))?;
            let header_value =
                HeaderValue::from_str(value).map_err(|_| invalid("value has invalid bytes"))?;
            header_map.append(header_name, header_value);
        }

        let started = Instant::now();
        let mut response =
            client.post(url).headers(header_map).body(body).send().await.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let cap = self.options.max_body_bytes;
        let mut snippet = Vec::with_capacity(cap.min(64 * 1024));
        while snippet.len() < cap {
            match response.chunk().await.map_err(|e| self.classify(e))? {
                Some(chunk) => {
                    let take = chunk.len().min(cap - snippet.len());
                    snippet.extend_from_slice(&chunk[..take]);
                }
                None => break,
            }
        }
        // dropping the response closes the connection on the unread rest instead of draining it
        drop(response);
        Ok(Response {
            status,
            body_snippet: String::from_utf8_lossy(&snippet).into_owned(),
            latency: started.elapsed(),
        })
    }

    fn classify(&self, error: reqwest::Error) -> DeliveryError {
        if let Some(refusal) = find_source::<PolicyRefusal>(&error) {
            return DeliveryError::Refused { reason: refusal.message.clone() };
        }
        if error.is_timeout() {
            return if error.is_connect() {
                DeliveryError::Timeout { what: "connect", limit: self.options.connect_timeout }
            } else {
                DeliveryError::Timeout { what: "request", limit: self.options.timeout }
            };
        }
        let is_connect = error.is_connect();
        let message = error_chain(&error.without_url());
        if is_connect { DeliveryError::Connect { message } } else { DeliveryError::Other { message } }
    }
}

fn build_inner(
    options: &ClientOptions,
    policy: AddressPolicy,
    https_only: bool,
) -> Result<reqwest::Client, DeliveryError> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(https_only)
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| DeliveryError::Other {
            message: format!("could not build the http client: {}", error_chain(&e)),
        })
}

/// The first error of type `T` in `error`'s source chain, `error` included.
fn find_source<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// `error` and its sources joined by ": ", skipping a source whose text its parent already shows.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut current = error.source();
    while let Some(source) = current {
        let text = source.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        current = source.source();
    }
    message
}

#[cfg(test)]
mod tests;
