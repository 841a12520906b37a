//! The only `unsafe` in `direct`: a small escape hatch into libcrypto's CMS
//! and X509_STORE APIs for what the `openssl` crate does not expose (G10).
//!
//! Owns: building an EnvelopedData/AuthEnvelopedData with per-recipient
//! RSA-OAEP key transport (its content written into a memory BIO sized up
//! front), reading each SignerInfo's certificate and digest
//! algorithm, and adding CRLs to an `X509_STORE`. It does not own policy,
//! MIME or any decision about what is acceptable; callers get plain Rust
//! values back. Every function here is safe to call.

use std::ffi::{c_int, c_long, c_uint, c_void};
use std::ptr;

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::asn1::Asn1ObjectRef;
use openssl::cms::{CMSOptions, CmsContentInfo, CmsContentInfoRef};
use openssl::error::ErrorStack;
use openssl::md::MdRef;
use openssl::nid::Nid;
use openssl::pkey::Public;
use openssl::pkey_ctx::PkeyCtxRef;
use openssl::rsa::Padding;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::{X509, X509CrlRef, X509Ref};
use openssl_sys as sys;

/// Opaque `CMS_RecipientInfo`.
#[repr(C)]
struct CmsRecipientInfo {
    _private: [u8; 0],
}

/// Opaque `CMS_SignerInfo`.
#[repr(C)]
struct CmsSignerInfo {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn CMS_add1_recipient_cert(
        cms: *mut sys::CMS_ContentInfo,
        recip: *mut sys::X509,
        flags: c_uint,
    ) -> *mut CmsRecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CmsRecipientInfo) -> *mut sys::EVP_PKEY_CTX;
    fn CMS_final(
        cms: *mut sys::CMS_ContentInfo,
        data: *mut sys::BIO,
        dcont: *mut sys::BIO,
        flags: c_uint,
    ) -> c_int;
    fn CMS_get0_SignerInfos(cms: *mut sys::CMS_ContentInfo) -> *mut sys::OPENSSL_STACK;
    fn CMS_SignerInfo_get0_algs(
        si: *mut CmsSignerInfo,
        pk: *mut *mut sys::EVP_PKEY,
        signer: *mut *mut sys::X509,
        pdig: *mut *mut sys::X509_ALGOR,
        psig: *mut *mut sys::X509_ALGOR,
    );
    fn CMS_get0_RecipientInfos(cms: *mut sys::CMS_ContentInfo) -> *mut sys::OPENSSL_STACK;
    fn CMS_RecipientInfo_type(ri: *mut CmsRecipientInfo) -> c_int;
    fn CMS_RecipientInfo_ktri_cert_cmp(ri: *mut CmsRecipientInfo, cert: *mut sys::X509) -> c_int;
    fn CMS_get1_certs(cms: *mut sys::CMS_ContentInfo) -> *mut sys::stack_st_X509;
    fn X509_STORE_add_crl(store: *mut sys::X509_STORE, crl: *mut sys::X509_CRL) -> c_int;
    fn BUF_MEM_new() -> *mut BufMem;
    fn BUF_MEM_grow(buf: *mut BufMem, len: usize) -> usize;
    fn BUF_MEM_free(buf: *mut BufMem);
}

/// Opaque `BUF_MEM`.
#[repr(C)]
struct BufMem {
    _private: [u8; 0],
}

/// `BIO_C_SET_BUF_MEM` and `BIO_CLOSE` from `bio.h`.
const BIO_C_SET_BUF_MEM: c_int = 114;
const BIO_CLOSE: c_long = 1;

/// A memory BIO, owned by the caller, whose buffer already has room for
/// `capacity` bytes: writing that much into it does not reallocate (a fresh
/// memory BIO grows by a third at a time, copying and cleansing each step).
fn presized_mem_bio(capacity: usize) -> Result<*mut sys::BIO, ErrorStack> {
    // SAFETY: plain allocation calls. The BUF_MEM is grown to `capacity`
    // (allocating it) and its length set back to 0 (which keeps the
    // allocation); on success the BIO takes ownership of it (BIO_CLOSE), on
    // failure it is freed here. Nothing else holds either pointer.
    unsafe {
        let buf = BUF_MEM_new();
        if buf.is_null() {
            return Err(ErrorStack::get());
        }
        if BUF_MEM_grow(buf, capacity) != capacity {
            BUF_MEM_free(buf);
            return Err(ErrorStack::get());
        }
        BUF_MEM_grow(buf, 0);
        let bio = sys::BIO_new(sys::BIO_s_mem());
        if bio.is_null() {
            BUF_MEM_free(buf);
            return Err(ErrorStack::get());
        }
        sys::BIO_ctrl(bio, BIO_C_SET_BUF_MEM, BIO_CLOSE, buf.cast::<c_void>());
        Ok(bio)
    }
}

/// Largest block of the content-encryption ciphers we use (AES): the most
/// that padding adds.
const MAX_CIPHER_BLOCK: usize = 16;

/// Encrypts `data` to every certificate in `recipients` (each must hold an RSA key).
///
/// An AEAD `cipher` (AES-GCM) yields AuthEnvelopedData, anything else
/// EnvelopedData. `oaep = Some(md)` wraps the key with RSAES-OAEP using `md`
/// for both the OAEP hash and MGF1; `None` uses RSAES-PKCS1-v1_5.
pub(super) fn encrypt(
    data: &[u8],
    recipients: &[X509],
    cipher: Cipher,
    oaep: Option<&MdRef>,
) -> Result<CmsContentInfo, ErrorStack> {
    let mut flags = CMSOptions::BINARY | CMSOptions::PARTIAL;
    if oaep.is_some() {
        flags |= CMSOptions::KEY_PARAM;
    }
    // With CMS_PARTIAL and no recipients, CMS_encrypt only creates the
    // structure and neither reads `data` nor encrypts anything yet.
    let none = Stack::<X509>::new()?;
    let cms = CmsContentInfo::encrypt(&none, &[], cipher, flags)?;
    for cert in recipients {
        // SAFETY: `cms` and `cert` are live owned objects; CMS_add1_recipient_cert
        // takes its own reference to the certificate. The returned RecipientInfo
        // is owned by `cms` and is only used while `cms` lives.
        let ri = unsafe { CMS_add1_recipient_cert(cms.as_ptr(), cert.as_ptr(), flags.bits()) };
        if ri.is_null() {
            return Err(ErrorStack::get());
        }
        let Some(md) = oaep else { continue };
        // SAFETY: `ri` is non-null and owned by `cms`. With CMS_KEY_PARAM the
        // RecipientInfo holds an initialised EVP_PKEY_CTX that it owns; we borrow
        // it mutably only inside this loop iteration, while `cms` is alive.
        let ctx = unsafe {
            let p = CMS_RecipientInfo_get0_pkey_ctx(ri);
            if p.is_null() {
                return Err(ErrorStack::get());
            }
            PkeyCtxRef::<Public>::from_ptr_mut(p)
        };
        ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
        ctx.set_rsa_oaep_md(md)?;
        ctx.set_rsa_mgf1_md(md)?;
    }
    let len = c_int::try_from(data.len()).map_err(|_| ErrorStack::get())?;
    // The encrypted content is at most one cipher block longer than `data`.
    let content = presized_mem_bio(data.len() + MAX_CIPHER_BLOCK)?;
    // SAFETY: the input memory BIO borrows `data` read-only for the duration
    // of CMS_final and is freed right after; `cms` is a live owned object.
    // `content` is ours: CMS_final writes the encrypted content into it, then
    // (the content not being detached) hands its buffer to `cms` and marks the
    // BIO read-only, so freeing the BIO afterwards leaves that buffer alone.
    // This is the path CMS_final takes with the memory BIO it would otherwise
    // create itself. CMS_final frees only the BIOs it pushed onto `content`,
    // which then stands alone again.
    let ok = unsafe {
        let bio = sys::BIO_new_mem_buf(data.as_ptr().cast::<c_void>(), len);
        if bio.is_null() {
            sys::BIO_free_all(content);
            return Err(ErrorStack::get());
        }
        let ok = CMS_final(cms.as_ptr(), bio, content, flags.bits());
        sys::BIO_free_all(bio);
        sys::BIO_free_all(content);
        ok
    };
    if ok != 1 {
        return Err(ErrorStack::get());
    }
    Ok(cms)
}

/// One SignerInfo as seen after `CMS_verify` has matched certificates to signers.
pub(super) struct SignerView {
    /// The signer's certificate, if one was found in the CMS or supplied.
    pub cert: Option<X509>,
    /// The digestAlgorithm of the SignerInfo.
    pub digest: Nid,
    /// The digestAlgorithm as text (short name or dotted OID).
    pub digest_name: String,
}

/// Lists the SignerInfos of a SignedData `cms`. Call after `verify`, which
/// attaches the signer certificates.
pub(super) fn signers(cms: &CmsContentInfoRef) -> Vec<SignerView> {
    let mut out = Vec::new();
    // SAFETY: `cms` is a live CMS_ContentInfo. CMS_get0_SignerInfos returns a
    // borrowed stack (or NULL for non-SignedData) owned by `cms`; every pointer
    // read from it is borrowed and only the certificate is copied out with its
    // own reference (`to_owned` = X509_up_ref).
    unsafe {
        let sis = CMS_get0_SignerInfos(cms.as_ptr());
        if sis.is_null() {
            return out;
        }
        let n = sys::OPENSSL_sk_num(sis);
        for i in 0..n {
            let si = sys::OPENSSL_sk_value(sis, i).cast::<CmsSignerInfo>();
            if si.is_null() {
                continue;
            }
            let mut signer: *mut sys::X509 = ptr::null_mut();
            let mut dig: *mut sys::X509_ALGOR = ptr::null_mut();
            CMS_SignerInfo_get0_algs(si, ptr::null_mut(), &mut signer, &mut dig, ptr::null_mut());
            let cert = (!signer.is_null()).then(|| X509Ref::from_ptr(signer).to_owned());
            let (digest, digest_name) = if dig.is_null() {
                (Nid::UNDEF, String::from("unknown"))
            } else {
                let mut obj: *const sys::ASN1_OBJECT = ptr::null();
                sys::X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), dig);
                if obj.is_null() {
                    (Nid::UNDEF, String::from("unknown"))
                } else {
                    let obj = Asn1ObjectRef::from_ptr(obj.cast_mut());
                    (obj.nid(), obj.to_string())
                }
            };
            out.push(SignerView {
                cert,
                digest,
                digest_name,
            });
        }
    }
    out
}

/// Adds `crl` to the store being built (the store takes its own reference).
pub(super) fn add_crl(store: &mut X509StoreBuilderRef, crl: &X509CrlRef) -> Result<(), ErrorStack> {
    // SAFETY: both pointers are live; X509_STORE_add_crl up-refs the CRL.
    let ok = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
    if ok == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// The certificates carried in a SignedData (the `certificates` field).
pub(super) fn certs(cms: &CmsContentInfoRef) -> Vec<X509> {
    // SAFETY: CMS_get1_certs returns a new stack (or NULL) whose certificates
    // are up-ref'd; `Stack::from_ptr` takes ownership and frees both on drop.
    unsafe {
        let p = CMS_get1_certs(cms.as_ptr());
        if p.is_null() {
            return Vec::new();
        }
        let stack = Stack::<X509>::from_ptr(p);
        stack.iter().map(|c| c.to_owned()).collect()
    }
}

/// `CMS_RECIPINFO_TRANS`: a KeyTransRecipientInfo.
const RECIPINFO_TRANS: c_int = 0;

/// True when an RSA KeyTransRecipientInfo of the (Auth)EnvelopedData `cms`
/// names `cert` (by issuer and serial number or by subject key identifier).
pub(super) fn is_recipient(cms: &CmsContentInfoRef, cert: &X509Ref) -> bool {
    // SAFETY: `cms` and `cert` are live. CMS_get0_RecipientInfos returns a
    // stack owned by `cms` (NULL for other content types); the RecipientInfo
    // pointers read from it are borrowed and only passed back to libcrypto
    // while `cms` is alive. Nothing is freed or retained.
    unsafe {
        let ris = CMS_get0_RecipientInfos(cms.as_ptr());
        if ris.is_null() {
            return false;
        }
        for i in 0..sys::OPENSSL_sk_num(ris) {
            let ri = sys::OPENSSL_sk_value(ris, i).cast::<CmsRecipientInfo>();
            if !ri.is_null()
                && CMS_RecipientInfo_type(ri) == RECIPINFO_TRANS
                && CMS_RecipientInfo_ktri_cert_cmp(ri, cert.as_ptr()) == 0
            {
                return true;
            }
        }
    }
    false
}
