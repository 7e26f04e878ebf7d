//! Shape checks for the strings inside the config: names, endpoints, host patterns.

use std::net::Ipv6Addr;

/// Upstream and filter names: `[A-Za-z0-9_.-]+`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// An upstream endpoint: `host:port`, `ipv4:port` or `[ipv6]:port`, port 1..=65535.
pub(crate) fn check_endpoint(s: &str) -> Result<(), &'static str> {
    let port = if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or("expected [IPV6]:PORT")?;
        ip.parse::<Ipv6Addr>().map_err(|_| "invalid IPv6 address")?;
        port
    } else {
        let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
        if host.contains(':') {
            return Err("an IPv6 address needs brackets, e.g. [::1]:80");
        }
        check_host_name(host)?;
        port
    };
    let valid = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if valid {
        Ok(())
    } else {
        Err("port must be a number from 1 to 65535")
    }
}

/// A route's `match.host`: a host name, `*.` and a host name, or `[ipv6]`.
pub(crate) fn check_host_pattern(s: &str) -> Result<(), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err("expected [IPV6] with no port"),
        };
    }
    let name = s.strip_prefix("*.").unwrap_or(s);
    if name.contains(':') {
        return Err("a host pattern has no port (ports are ignored when matching)");
    }
    if name.contains('*') {
        return Err("a wildcard is allowed only as a leading \"*.\"");
    }
    check_host_name(name)
}

pub(crate) fn check_host_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("missing host")
    } else if s.chars().all(is_name_char) {
        Ok(())
    } else {
        Err("a host may contain only letters, digits, '_', '.' and '-'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_allow_only_the_documented_characters() {
        assert!(is_name("add-header_v1.2"));
        assert!(!is_name(""));
        assert!(!is_name("a b"));
        assert!(!is_name("a/b"));
        assert!(!is_name("é"));
    }

    #[test]
    fn endpoints_accept_names_ipv4_and_bracketed_ipv6() {
        for ok in ["127.0.0.1:9000", "backend.local:80", "[::1]:80", "a:65535"] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn endpoints_reject_bad_ports_and_hosts() {
        for bad in [
            "127.0.0.1",
            "host:0",
            "host:65536",
            "host:+80",
            "host:",
            ":80",
            "::1:80",
            "[::1]",
            "[nope]:80",
            "a b:80",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns_accept_exact_wildcard_and_ipv6() {
        for ok in ["example.com", "*.example.com", "[::1]", "localhost"] {
            assert_eq!(check_host_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "*.",
            "a.*.com",
            "*example.com",
            "example.com:80",
            "[::1]:80",
        ] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
    }
}
