//! The cluster allow-list of `serve --allow-cluster`: which hosts the service's jobs may read
//! or write.
//!
//! In: patterns (`db1.example.com`, `db1.example.com:27017`, `*.example.com`, `10.0.0.5:27017`,
//! `[::1]:27017`) and the text of a job's connection strings. Out: the hosts a URI names — every
//! member of a seed list (`mongodb://h1:1,h2:2`), the name of a `mongodb+srv://` URI, a SOCKS5
//! `proxyHost` — and one problem for each host no pattern allows. Only text is read: nothing here
//! connects or resolves a name, so a refused spec never reaches the network, not even DNS.
//!
//! A pattern without a port allows every port of its host; `*.example.com` allows the names
//! under `example.com` (not `example.com` itself). A `mongodb+srv://` name has no port of its own
//! (DNS gives the members' ports), so only patterns without a port allow it; the driver then
//! connects only to members under the SRV name's parent domain. A replica set's members are those
//! the allowed servers report: the list cannot see past what the operator's clusters say.

use std::fmt;
use std::net::IpAddr;

/// The port a `mongodb://` host without one is reached on.
const DEFAULT_PORT: u16 = 27017;
/// The port of a `proxyHost` without `proxyPort`.
const DEFAULT_PROXY_PORT: u16 = 1080;

/// Hosts jobs may reach. Empty: any host, as without `--allow-cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

/// One `--allow-cluster` value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A name (lowercase, no final dot) or an IP address (in its canonical text form).
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: any name ending so.
    Under(String),
}

/// Why an `--allow-cluster` value is not a pattern.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--allow-cluster {value:?}: {reason}")]
pub struct PatternError {
    value: String,
    reason: &'static str,
}

/// How a URI names a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A member of a `mongodb://` seed list.
    Seed,
    /// The name of a `mongodb+srv://` URI, looked up in DNS.
    Srv,
    /// A SOCKS5 proxy (`proxyHost`) every connection goes through.
    Proxy,
}

/// A host a connection string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub role: Role,
    /// Lowercase, no final dot; an IP address in its canonical text form.
    pub host: String,
    /// `None` for a `mongodb+srv://` name.
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host: &str = &self.host;
        let bracketed = host.contains(':');
        match (bracketed, self.port) {
            (true, Some(port)) => write!(f, "[{host}]:{port}"),
            (false, Some(port)) => write!(f, "{host}:{port}"),
            (_, None) => f.write_str(host),
        }
    }
}

impl AllowList {
    /// The list of `--allow-cluster` values; none allows any host.
    pub fn new(values: &[String]) -> Result<AllowList, PatternError> {
        let patterns = values
            .iter()
            .map(|v| Pattern::parse(v))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { patterns })
    }

    /// True when every host is allowed (no `--allow-cluster`).
    pub fn allows_any(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Every host of the URI in the spec's `field` that the list does not allow, as a problem
    /// for the operator; none when the list allows any host.
    pub fn problems(&self, field: &str, uri: &str) -> Vec<String> {
        if self.allows_any() {
            return vec![];
        }
        let endpoints = match endpoints(uri) {
            Ok(endpoints) => endpoints,
            Err(problem) => return vec![format!("{field}: {problem}")],
        };
        endpoints
            .iter()
            .filter(|e| !self.allows(e))
            .map(|e| {
                let what = match e.role {
                    Role::Seed => "host",
                    Role::Srv => "mongodb+srv name",
                    Role::Proxy => "proxy host",
                };
                format!("{field}: {what} {e} is not in --allow-cluster")
            })
            .collect()
    }

    /// The problem with an HTTP URL the service would reach for a job (`throttle_url`), when
    /// its host is not in the list; none when the list allows any host.
    pub fn url_problems(&self, field: &str, url: &str) -> Vec<String> {
        if self.allows_any() {
            return vec![];
        }
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => return vec![format!("{field}: not a URL ({e})")],
        };
        // IPv6 comes in brackets, canonical inside them.
        let host = match parsed.host_str() {
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim_end_matches('.')
                .to_lowercase(),
            None => return vec![format!("{field}: the URL names no host")],
        };
        let endpoint = Endpoint {
            role: Role::Seed,
            host,
            port: parsed.port_or_known_default(),
        };
        match self.allows(&endpoint) {
            true => vec![],
            false => vec![format!(
                "{field}: host {endpoint} is not in --allow-cluster"
            )],
        }
    }

    fn allows(&self, endpoint: &Endpoint) -> bool {
        self.patterns.iter().any(|p| p.matches(endpoint))
    }
}

impl Pattern {
    fn parse(value: &str) -> Result<Pattern, PatternError> {
        let refuse = |reason| PatternError {
            // A URI given by mistake is quoted without its password.
            value: crate::mongo::redact_uri(value),
            reason,
        };
        let (host, port) = split_host_port(value.trim()).ok_or_else(|| {
            refuse("expected HOST, HOST:PORT or *.DOMAIN[:PORT] (IPv6 as [::1]:27017)")
        })?;
        if host == "*" {
            return Err(refuse(
                "a pattern must name its domain (*.example.com); to allow any host, leave out --allow-cluster",
            ));
        }
        let host = match host.strip_prefix("*.") {
            Some(domain) if valid_name(domain) => HostPattern::Under(format!(".{domain}")),
            Some(_) => return Err(refuse("not a domain after *.")),
            None if host.parse::<IpAddr>().is_ok() || valid_name(&host) => HostPattern::Exact(host),
            None => return Err(refuse("not a host name or an IP address")),
        };
        Ok(Pattern { host, port })
    }

    fn matches(&self, endpoint: &Endpoint) -> bool {
        let host = match &self.host {
            HostPattern::Exact(name) => *name == endpoint.host,
            HostPattern::Under(domain) => endpoint.host.ends_with(domain.as_str()),
        };
        let port = match (self.port, endpoint.port) {
            (None, _) => true,
            (Some(allowed), Some(port)) => allowed == port,
            // An SRV name's ports come from DNS: a pattern with a port cannot vouch for them.
            (Some(_), None) => false,
        };
        host && port
    }
}

/// Letters, digits, `-`, `_` and dots, in labels that are not empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// A host name or an IP address, nothing escaped.
fn plain(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok() || valid_name(host)
}

/// Host (normalised) and port of `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6
/// address is a host without a port. Host names are lowercased and lose a final dot; IP
/// addresses are written in their canonical form, so `::1` and `0:0::1` are one host.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (host, port)
    } else if text.parse::<std::net::Ipv6Addr>().is_ok() {
        (text, None)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
    };
    Some((host, port))
}

/// Every host a connection string names, read from its text alone, as the driver will read it:
/// whatever its scheme's case and the spaces around it (`MONGODB://h` names `h`).
pub fn endpoints(uri: &str) -> Result<Vec<Endpoint>, String> {
    let normalized = crate::mongo::normalize_uri(uri);
    // Not a MongoDB URI: the spec's validation says so; it names no host to check.
    let Some((scheme, rest)) = normalized.as_deref().and_then(|uri| uri.split_once("://")) else {
        return Ok(vec![]);
    };
    let srv = scheme == "mongodb+srv";
    // The hosts end at the first '/' (or '?' when there is no path); credentials end at the
    // last '@' before that (a password must escape '@', '/' and '?').
    let hosts_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..hosts_end];
    let hosts = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let mut found = Vec::new();
    for host in hosts.split(',') {
        // Only plain names and IP addresses: an escaped character (`%2e`) would let the text
        // checked here differ from the name the driver looks up.
        let Some((name, port)) = split_host_port(host).filter(|(name, _)| plain(name)) else {
            return Err(format!("cannot read the host {host:?} of the URI"));
        };
        found.push(if srv {
            if port.is_some() {
                return Err("a mongodb+srv:// URI names no port".into());
            }
            Endpoint {
                role: Role::Srv,
                host: name,
                port: None,
            }
        } else {
            Endpoint {
                role: Role::Seed,
                host: name,
                port: Some(port.unwrap_or(DEFAULT_PORT)),
            }
        });
    }
    if srv && found.len() != 1 {
        return Err("a mongodb+srv:// URI names one host".into());
    }
    if let Some(proxy) = proxy(&rest[hosts_end..])? {
        found.push(proxy);
    }
    Ok(found)
}

/// The SOCKS5 proxy of the URI's options (`proxyHost`, `proxyPort`), if any.
fn proxy(path_and_query: &str) -> Result<Option<Endpoint>, String> {
    let Some((_, query)) = path_and_query.split_once('?') else {
        return Ok(None);
    };
    let option = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .next_back()
    };
    let Some(host) = option("proxyHost") else {
        return Ok(None);
    };
    let port = match option("proxyPort") {
        None => DEFAULT_PROXY_PORT,
        Some(port) => port
            .parse()
            .map_err(|_| format!("proxyPort {port:?} is not a port"))?,
    };
    let Some((host, None)) = split_host_port(host).filter(|(name, _)| plain(name)) else {
        return Err(format!("cannot read the proxyHost {host:?}"));
    };
    Ok(Some(Endpoint {
        role: Role::Proxy,
        host,
        port: Some(port),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        AllowList::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn hosts(uri: &str) -> Vec<String> {
        endpoints(uri)
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn reads_every_host_a_uri_names() {
        assert_eq!(hosts("mongodb://a.example"), ["a.example:27017"]);
        assert_eq!(
            hosts("mongodb://u:p%40ss@H1.Example.:1,h2.example:2/db?replicaSet=rs&w=1"),
            ["h1.example:1", "h2.example:2"]
        );
        assert_eq!(
            hosts("mongodb://[::1]:27018,[0:0::1]/?x=1"),
            ["[::1]:27018", "[::1]:27017"]
        );
        assert_eq!(hosts("mongodb://user@127.0.0.1"), ["127.0.0.1:27017"]);
        assert_eq!(
            hosts("mongodb+srv://user:pw@Cluster0.Example.com/db"),
            ["cluster0.example.com"]
        );
        assert_eq!(
            hosts("mongodb://db.example/?proxyHost=socks.example&proxyport=9050"),
            ["db.example:27017", "socks.example:9050"]
        );
        assert_eq!(
            hosts("mongodb://db.example?proxyHost=[::1]"),
            ["db.example:27017", "[::1]:1080"]
        );
        // A password with an escaped '@' does not hide a host.
        assert_eq!(
            hosts("mongodb://u:a%40evil.example@db.example"),
            ["db.example:27017"]
        );
        assert_eq!(hosts("postgres://db.example"), Vec::<String>::new());
        // As the driver reads them, so the list checks the host the job would reach.
        assert_eq!(hosts(" MONGODB://Evil.example:1 "), ["evil.example:1"]);
        assert_eq!(
            hosts("MongoDB+SRV://u:pw@cluster0.example.com"),
            ["cluster0.example.com"]
        );
        for bad in [
            "mongodb://",
            "mongodb://a,,b",
            "mongodb://a:notaport",
            "mongodb://[::1",
            "mongodb+srv://a.example:27017",
            "mongodb+srv://a.example,b.example",
            "mongodb://a?proxyHost=p&proxyPort=x",
            "mongodb://evil.example%2f.good.example",
            "mongodb://%2Ftmp%2Fmongodb-27017.sock",
        ] {
            assert!(endpoints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_allow_names_ports_and_domains() {
        let allow = list(&[
            "db1.example.com:27017",
            "*.internal.example",
            "10.0.0.5",
            "[::1]:27017",
        ]);
        for uri in [
            "mongodb://db1.example.com",
            "mongodb://DB1.example.com:27017/?w=1",
            "mongodb://a.internal.example:1,b.c.internal.example:2",
            "mongodb+srv://cluster0.internal.example",
            "mongodb://10.0.0.5:1234",
            "mongodb://[0:0:0:0:0:0:0:1]:27017",
            "mongodb://x:y@db1.example.com/?proxyHost=socks.internal.example",
        ] {
            assert_eq!(allow.problems("from", uri), Vec::<String>::new(), "{uri}");
        }
        assert_eq!(
            allow.problems("from", "mongodb://db1.example.com:27018,evil.example"),
            [
                "from: host db1.example.com:27018 is not in --allow-cluster",
                "from: host evil.example:27017 is not in --allow-cluster"
            ]
        );
        assert_eq!(
            allow.problems("to", "mongodb+srv://db1.example.com"),
            ["to: mongodb+srv name db1.example.com is not in --allow-cluster"],
            "a pattern with a port does not vouch for an SRV name"
        );
        assert_eq!(
            allow.problems("to", "mongodb://internal.example"),
            ["to: host internal.example:27017 is not in --allow-cluster"],
            "*.domain is the names under the domain"
        );
        assert_eq!(
            allow.problems("to", "mongodb://evilinternal.example"),
            ["to: host evilinternal.example:27017 is not in --allow-cluster"]
        );
        assert_eq!(
            allow.problems(
                "to",
                "mongodb://10.0.0.5/?proxyHost=evil.example&proxyPort=1"
            ),
            ["to: proxy host evil.example:1 is not in --allow-cluster"]
        );
        assert_eq!(
            allow.problems("to", "mongodb://[::2]"),
            ["to: host [::2]:27017 is not in --allow-cluster"]
        );
        assert_eq!(
            allow.problems("from", "mongodb://a,,b"),
            ["from: cannot read the host \"\" of the URI"]
        );
        assert!(AllowList::default().allows_any());
        assert_eq!(
            AllowList::default().problems("from", "mongodb://anything"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn patterns_that_mean_nothing_are_refused() {
        for bad in [
            "*",
            "",
            "*.",
            "db.example:port",
            "a b",
            "*.a..b",
            "[::1",
            "http://db.example",
        ] {
            assert!(AllowList::new(&[bad.to_string()]).is_err(), "{bad}");
        }
        let message = AllowList::new(&["mongodb://u:S3cretPw!x@db.example".into()])
            .unwrap_err()
            .to_string();
        assert!(!message.contains("S3cretPw"), "{message}");
        let message = AllowList::new(&["*".into()]).unwrap_err().to_string();
        assert!(message.contains("leave out --allow-cluster"), "{message}");
    }
}
