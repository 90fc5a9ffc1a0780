//! Addresses a daemon advertises and the address it listens on.
//!
//! A daemon is known to the cluster by the address in the map (`--addr`): an
//! `IP:PORT`, or a `NAME:PORT` that resolves to it (a Kubernetes pod's stable DNS
//! name, whose IP changes when the pod moves). It listens on `--bind` when given,
//! else on the advertised address when that is an IP, else on every interface at the
//! advertised port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The socket address to listen on for `advertised`, or a message saying why there
/// is none.
pub fn listen_addr(advertised: &str, bind: Option<SocketAddr>) -> Result<SocketAddr, String> {
    if let Some(bind) = bind {
        return Ok(bind);
    }
    if let Ok(addr) = advertised.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = advertised
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| format!("address {advertised:?} is not IP:PORT or NAME:PORT"))?;
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_where_it_is_told_or_where_it_is_known() {
        let bind: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(listen_addr("10.0.0.5:6800", Some(bind)), Ok(bind));
        assert_eq!(
            listen_addr("10.0.0.5:6800", None),
            Ok("10.0.0.5:6800".parse().unwrap())
        );
        assert_eq!(
            listen_addr("lcpfs-osd-2.lcpfs-osd.storage.svc:6800", None),
            Ok("0.0.0.0:6800".parse().unwrap())
        );
        assert!(listen_addr("no-port", None).is_err());
        assert!(listen_addr(":6800", None).is_err());
        assert!(listen_addr("host:99999", None).is_err());
    }
}
