//! Reading what the `openssl` crate does not tell us about a CMS structure.
//!
//! Owns: a minimal DER walk that finds the content-encryption algorithm of an
//! EnvelopedData or AuthEnvelopedData, so that weak ciphers can be refused
//! before decryption and the cipher reported. It does not decrypt or verify
//! (see `smime`) and does not judge the algorithm (see `policy`).

use openssl::cms::CmsContentInfoRef;

use super::policy::ContentCipher;

/// Which kind of encrypted CMS a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvelopeKind {
    Enveloped,
    AuthEnveloped,
}

// 1.2.840.113549.1.7.3 and 1.2.840.113549.1.9.16.1.23
const OID_ENVELOPED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_AUTH_ENVELOPED: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];
const AES_PREFIX: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01];
const OID_DES_EDE3_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];
const OID_RC2_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x02];
const OID_DES_CBC: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x07];

/// One DER TLV: (tag, content, rest). Definite lengths and one-byte tags only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, r) = rest.split_at(n);
        rest = r;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len || tag & 0x1f == 0x1f {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The envelope kind and content-encryption algorithm of `cms`.
pub(super) fn envelope_info(cms: &CmsContentInfoRef) -> Option<(EnvelopeKind, ContentCipher)> {
    // Re-encoding yields DER even when the sender used indefinite-length BER.
    let der = cms.to_der().ok()?;
    let (0x30, ci, _) = tlv(&der)? else {
        return None;
    };
    let (0x06, oid, rest) = tlv(ci)? else {
        return None;
    };
    let kind = if oid == OID_ENVELOPED {
        EnvelopeKind::Enveloped
    } else if oid == OID_AUTH_ENVELOPED {
        EnvelopeKind::AuthEnveloped
    } else {
        return None;
    };
    let (0xa0, explicit, _) = tlv(rest)? else {
        return None;
    };
    let (0x30, mut body, _) = tlv(explicit)? else {
        return None;
    };
    // version, [0] originatorInfo, SET recipientInfos, then the
    // (Auth)EncryptedContentInfo SEQUENCE.
    while !body.is_empty() {
        let (tag, content, rest) = tlv(body)?;
        body = rest;
        if tag == 0x30 {
            let (0x06, _ctype, rest) = tlv(content)? else {
                return None;
            };
            let (0x30, alg, _) = tlv(rest)? else {
                return None;
            };
            let (0x06, alg_oid, _) = tlv(alg)? else {
                return None;
            };
            return Some((kind, cipher_from_oid(alg_oid)));
        }
    }
    None
}

fn cipher_from_oid(oid: &[u8]) -> ContentCipher {
    if let Some(last) = oid.strip_prefix(AES_PREFIX) {
        match last {
            [2] => return ContentCipher::Aes128Cbc,
            [22] => return ContentCipher::Aes192Cbc,
            [42] => return ContentCipher::Aes256Cbc,
            [6] => return ContentCipher::Aes128Gcm,
            [26] => return ContentCipher::Aes192Gcm,
            [46] => return ContentCipher::Aes256Gcm,
            _ => {}
        }
    }
    match oid {
        OID_DES_EDE3_CBC => ContentCipher::DesEde3Cbc,
        OID_RC2_CBC => ContentCipher::Rc2Cbc,
        OID_DES_CBC => ContentCipher::DesCbc,
        other => ContentCipher::Other(dotted(other)),
    }
}

/// Dotted-decimal form of DER OID content bytes.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_oids() {
        assert_eq!(dotted(OID_DES_EDE3_CBC), "1.2.840.113549.3.7");
        assert_eq!(
            dotted(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02]),
            "2.16.840.1.101.3.4.1.2"
        );
    }

    #[test]
    fn tlv_rejects_truncated_and_indefinite() {
        assert!(tlv(&[0x30, 0x05, 0x01]).is_none());
        assert!(tlv(&[0x30, 0x80, 0x00, 0x00]).is_none());
        assert!(tlv(&[]).is_none());
    }
}
