//! `switchboard bench --direct-inbound N`: inbound Direct end to end but for the IMAP fetch —
//! N sealed 100 KiB C-CDA messages (signed and encrypted by our own `seal`, as a sending STA
//! would) taken through `DirectInbound::take`: recorded sealed, decrypted and verified, opened
//! message stored, processed MDN queued, parsed, matched, parked unmatched — beside the
//! security step alone on the same messages (decrypt + verify + parse, no store), so the
//! figures show what the store and intake cost on top.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use openssl::pkey::PKey;
use openssl::x509::X509;

use super::direct::{FROM, TO, ccda_100k, make_pki};
use switchboard::config::{Config, ConnectorConfig};
use switchboard::daemon::Core;
use switchboard::direct::inbound::{Outcome, Taken};
use switchboard::direct::{SealOptions, TrustStore, seal};

pub async fn bench(database: &str, url: &str, dir: &Path, messages: usize) -> Result<()> {
    let pki = make_pki(dir)?;
    let doc = ccda_100k();
    let sealed: Vec<Vec<u8>> = (0..messages)
        .map(|i| {
            let inner = switchboard::channels::direct::compose::inner_message(
                FROM,
                TO,
                &format!("inbound{i}@direct.north.example"),
                Some("Referral"),
                &doc,
                &[],
            );
            seal(
                &inner,
                FROM,
                &[TO],
                &pki.cert,
                &pki.key,
                &[],
                std::slice::from_ref(&pki.recipient),
                SealOptions::default(),
            )
            .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;

    // The security step alone: decrypt, verify, policy, chain, unwrap.
    let key = PKey::private_key_from_pem(&std::fs::read(dir.join("doc.key"))?)?;
    let keys = [(pki.recipient.clone(), key)];
    let trust =
        TrustStore::from_anchors(vec![X509::from_pem(&std::fs::read(dir.join("ca.pem"))?)?]);
    let started = Instant::now();
    for raw in &sealed {
        switchboard::direct::open(raw, &keys, &trust, FROM, chrono::Utc::now())?;
    }
    let open_rate = messages as f64 / started.elapsed().as_secs_f64();

    let mut config = Config::from_toml("")?;
    config.data_dir = dir.to_path_buf();
    config.outbox.dir = dir.join("outbox");
    config.database.url = Some(url.to_string());
    let connector = format!(
        "address = \"{TO}\"\norganization = \"bench\"\ncertificate = \"{cert}\"\n\
         private_key = {{ file = \"{key}\" }}\ntrust = [{{ files = [\"{ca}\"] }}]\n\
         dns = {{ enabled = false }}\nldap = {{ enabled = false }}\n\
         revocation = {{ aia = false, crl = \"off\" }}\n\
         smtp = {{ host = \"127.0.0.1\", port = 9, tls = \"none\" }}\n",
        cert = dir.join("doc.pem").display(),
        key = dir.join("doc.key").display(),
        ca = dir.join("ca.pem").display(),
    );
    config.connectors.insert(
        "hisp".into(),
        ConnectorConfig::Direct(toml::from_str(&connector)?),
    );
    let core = Core::open(config).await?;
    core.store.organizations().ensure("bench", "Bench").await?;
    let tenancy = Arc::new(switchboard::tenancy::Tenancy::from_config(&core.config)?);
    let inbound = core.direct_inbound(tenancy)?;
    let started = Instant::now();
    for raw in &sealed {
        match inbound.take("hisp", raw).await? {
            Taken::Item(receipt) if receipt.outcome == Outcome::Unmatched => {}
            other => bail!("unexpected outcome {other:?}"),
        }
    }
    let wall = started.elapsed();
    let rate = messages as f64 / wall.as_secs_f64();
    println!(
        "direct inbound on {database} ({} KiB C-CDA, sealed AES-256-CBC/RSA-OAEP, 1 at a time): \
         {messages} messages received → verified → processed MDN queued → unmatched in {:.2} s = \
         {rate:.0} messages/s; the security step alone: {open_rate:.0} messages/s \
         (store and intake: {:.0}% of the time)",
        doc.len() / 1024,
        wall.as_secs_f64(),
        (1.0 - rate / open_rate).max(0.0) * 100.0
    );
    core.store.close().await;
    Ok(())
}
