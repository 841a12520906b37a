//! Every outbound HTTP client (providers, webhooks, alerts, certificate and fax-media fetches)
//! starts from [`builder`], which shares one TLS configuration per process.
//!
//! With native-tls, each `reqwest` client otherwise builds its own OpenSSL context and loads
//! the system's root store into it: about 140 certificates parsed per client, which made
//! start-up CPU-bound (measured: 42 % of a test run's CPU went to loading root stores) and kept
//! a copy of the store per client in memory. The shared connector is what `reqwest` would
//! build by default: the system roots, certificate and host-name verification, SNI, and ALPN
//! offering HTTP/2 and HTTP/1.1.

use std::sync::OnceLock;

/// A `reqwest` client builder on the process's shared TLS connector. If that connector could
/// not be built, the builder is `reqwest`'s own, whose `build()` then reports the error.
///
/// TLS settings made on the returned builder (`add_root_certificate`, `danger_*`, protocol
/// versions) do not apply: the connector is already built. A client that needs its own TLS
/// settings starts from `reqwest::Client::builder()`.
pub fn builder() -> reqwest::ClientBuilder {
    static TLS: OnceLock<Option<native_tls::TlsConnector>> = OnceLock::new();
    let tls = TLS.get_or_init(|| {
        native_tls::TlsConnector::builder()
            .request_alpns(&["h2", "http/1.1"])
            .build()
            .ok()
    });
    match tls {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls.clone()),
        None => reqwest::Client::builder(),
    }
}

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::ssl::{SslAcceptor, SslMethod};
    use openssl::x509::{X509, X509NameBuilder};

    /// A TLS server on loopback with a self-signed certificate for 127.0.0.1, answering every
    /// request with 200; returns its port.
    fn self_signed_server() -> u16 {
        let key = PKey::generate_ed25519().expect("key");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", "127.0.0.1").expect("CN");
        let name = name.build();
        let mut cert = X509::builder().expect("cert");
        cert.set_version(2).expect("version");
        cert.set_subject_name(&name).expect("subject");
        cert.set_issuer_name(&name).expect("issuer");
        cert.set_pubkey(&key).expect("pubkey");
        cert.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("not before");
        cert.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
            .expect("not after");
        cert.sign(&key, MessageDigest::null()).expect("sign");
        let cert = cert.build();
        let mut acceptor =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        acceptor.set_private_key(&key).expect("key");
        acceptor.set_certificate(&cert).expect("certificate");
        let acceptor = acceptor.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok(mut tls) = acceptor.accept(stream) {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf);
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            }
        });
        port
    }

    /// The shared connector still verifies certificates: a server whose certificate no system
    /// root signed is refused, by every client built on it.
    #[tokio::test]
    async fn shared_tls_verifies_certificates() {
        let port = self_signed_server();
        for _ in 0..2 {
            let client = super::builder().build().expect("client");
            let error = client
                .get(format!("https://127.0.0.1:{port}/"))
                .send()
                .await
                .expect_err("an untrusted certificate is refused");
            assert!(error.is_connect(), "{error:?}");
        }
    }
}
