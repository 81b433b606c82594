//! HMAC-SHA256 signatures, as `sha256=HEX`: what the host puts on the
//! alerts it sends (`Settle-Signature`) and checks on the webhooks it
//! receives. One implementation, so both sides agree.

use hmac::Mac;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// `sha256=HEX` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `given` (`sha256=HEX`) is the signature of `body` under
/// `secret`, compared in constant time.
pub fn verify(secret: &str, body: &[u8], given: &str) -> bool {
    let Some(hex_part) = given.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_part) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_and_verify_in_constant_time() {
        // RFC 4231, test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify("Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify("jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"x", "sha256=zz"));
        assert!(!verify("Jefe", b"x", "md5=00"));
    }
}
