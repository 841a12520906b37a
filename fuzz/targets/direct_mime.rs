//! The MIME side of inbound Direct, directly (no envelope to get past): a decrypted entity
//! split into signed content and signature, unwrapped into the original message, its headers
//! read as `open` reads them; plus the byte-level helpers (line ends, body start, transfer
//! decoding) with their round-trip properties.

use switchboard_direct::fuzzing as f;

/// Every CR is followed by LF and every LF preceded by CR.
fn is_crlf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        _ => true,
    })
}

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    // Line ends: CRLF throughout afterwards, idempotent, and nothing but line ends changed.
    let crlf = f::to_crlf(data);
    assert!(is_crlf(&crlf), "to_crlf left a bare CR or LF");
    assert_eq!(f::to_crlf(&crlf), crlf, "to_crlf is not idempotent");
    let strip = |b: &[u8]| {
        b.iter()
            .copied()
            .filter(|c| *c != b'\r' && *c != b'\n')
            .collect::<Vec<u8>>()
    };
    assert_eq!(
        strip(&crlf),
        strip(data),
        "to_crlf changed more than line ends"
    );

    if let Some(start) = f::body_start(data) {
        assert!(start <= data.len());
    }
    // Base64 as we write it decodes back to the input.
    let folded = f::base64_folded(data);
    assert!(
        folded.split(|&b| b == b'\n').all(|l| l.len() <= 77),
        "base64 line over 76"
    );
    assert_eq!(
        f::transfer_decode(Some("base64"), &folded).as_deref(),
        Some(data)
    );
    let _ = f::transfer_decode(Some("base64"), data);
    let _ = f::transfer_decode(Some(" Quoted-Printable "), data);

    let _ = f::headers(data);
    if let Ok((signed, _signature, detached)) = f::split_signed(data) {
        assert!(detached || signed.is_empty());
        if detached {
            let _ = f::unwrap(&signed, data);
        }
    }
    if let Ok((inner, _wrapped)) = f::unwrap(data, data) {
        let _ = f::headers(&inner);
    }
}
