//! Servers the tests do not start: tributary URLs given in environment variables
//! (`TRIBUTARY_PEERS_MODE=external`).

use std::sync::Mutex;
use std::time::Duration;

use crate::{Mode, Peer, PeerError, Reason, Server};

pub(crate) fn external(peer: Peer) -> Result<Server, PeerError> {
    let variable = peer.url_variable();
    let url = std::env::var(variable).map_err(|_| {
        PeerError::new(
            peer,
            Reason::NoUrl,
            format!("external mode, but {variable} is not set"),
        )
        .fix(format!(
            "export {variable}=<tributary URL of your {peer} server>"
        ))
        .fix("or unset TRIBUTARY_PEERS_MODE to start installed servers")
    })?;
    let (address, http_address) = addresses_from_url(&url).ok_or_else(|| {
        PeerError::new(
            peer,
            Reason::NoUrl,
            format!("{variable} is not a URL with a host: {}", redact(&url)),
        )
    })?;
    Ok(Server {
        peer,
        mode: Mode::External,
        url,
        address,
        http_address,
        log: None,
        startup: Duration::ZERO,
        process: Mutex::new(None),
        _container: None,
        data_dir: None,
        recipe: None,
        shared_by_run: false,
    })
}

/// The main and admin `host:port` a tributary URL points at: the `endpoint` option wins over
/// the URL's own host (Pub/Sub and Kinesis name a project or region there), `admin` gives the
/// HTTP address.
fn addresses_from_url(url: &str) -> Option<(String, Option<String>)> {
    let (_, rest) = url.split_once("://")?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority
        .trim_end_matches('/')
        .rsplit('@')
        .next()?
        .split(',')
        .next()?;
    let option = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| {
                v.split_once("://")
                    .map(|(_, hp)| hp)
                    .unwrap_or(v)
                    .trim_end_matches('/')
                    .to_string()
            })
        })
    };
    let address = option("endpoint").unwrap_or_else(|| authority.to_string());
    Some((address, option("admin")))
}

fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_endpoint_then_authority() {
        assert_eq!(
            addresses_from_url("kafka://10.0.0.1:9092,10.0.0.2:9092"),
            Some(("10.0.0.1:9092".into(), None))
        );
        assert_eq!(
            addresses_from_url("pubsub://proj?endpoint=http://127.0.0.1:8085"),
            Some(("127.0.0.1:8085".into(), None))
        );
        assert_eq!(
            addresses_from_url("pulsar://127.0.0.1:6650?admin=http://127.0.0.1:8080/"),
            Some(("127.0.0.1:6650".into(), Some("127.0.0.1:8080".into())))
        );
        assert_eq!(addresses_from_url("not a url"), None);
    }
}
