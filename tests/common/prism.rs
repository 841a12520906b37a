//! Prism (`@stoplight/prism-cli`, installed by `.ci/peers`) serving a provider's published
//! OpenAPI document from `tests/data/providers/`: a mock that answers with the document's
//! examples and refuses (422) requests that break its contract.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Prism; killed when dropped.
pub struct Prism(Child);

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("PRISM") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/prism/node_modules/.bin/prism")
}

/// Prism on port 0 serving `tests/data/providers/<document>`: it prints the address it listens
/// on (`Prism is listening on http://127.0.0.1:<port>`); its output is drained until it exits.
pub async fn start(document: &str) -> (Prism, String) {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/providers")
        .join(document);
    let binary = binary();
    assert!(
        binary.exists(),
        "Prism is required: run `bash .ci/run` (it installs @stoplight/prism-cli) or set PRISM"
    );
    let mut child = Command::new(binary)
        .args(["mock", "-h", "127.0.0.1", "-p", "0"])
        .arg(spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prism");
    let stdout = child.stdout.take().expect("stdout");
    let prism = Prism(child);
    let (tell, told) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tell = Some(tell);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("Prism is listening on http://") {
                let url: String = line[at + "Prism is listening on ".len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                if let Some(tell) = tell.take() {
                    let _ = tell.send(url);
                }
            }
        }
    });
    let base = super::wait::within("Prism's address", Duration::from_secs(60), told)
        .await
        .expect("prism exited before it listened");
    (prism, base)
}
