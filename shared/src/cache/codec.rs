//! How a cached value becomes an envelope's payload, by the envelope's format byte:
//! - format 2 (written): postcard, a compact binary serde format (fields in order, no names,
//!   varint integers), about three times faster to decode than JSON and smaller;
//! - format 1 (read only): JSON, so entries written before the switch are still served.
//!
//! Another format byte is refused by the envelope, so a newer writer's entries are clean misses.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::{FORMAT_BINARY, FORMAT_JSON};

/// Why a payload could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// postcard refused the value or the bytes.
    #[error("binary payload: {0}")]
    Binary(#[from] postcard::Error),
    /// serde_json refused the bytes.
    #[error("JSON payload: {0}")]
    Json(#[from] serde_json::Error),
    /// A format no codec reads.
    #[error("no codec for envelope format {0}")]
    UnknownFormat(u8),
}

/// The payload of `value` in the format written now ([`FORMAT_BINARY`]).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// Reads a payload written in `format`. Trailing bytes are an error: the payload is exactly
/// one value.
pub fn decode<T: DeserializeOwned>(format: u8, payload: &[u8]) -> Result<T, CodecError> {
    match format {
        FORMAT_BINARY => {
            let (value, rest) = postcard::take_from_bytes(payload)?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(CodecError::Binary(postcard::Error::DeserializeBadEncoding))
            }
        }
        FORMAT_JSON => Ok(serde_json::from_slice(payload)?),
        other => Err(CodecError::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Currency, Money, Offer, OfferId, OfferStatus, Product, ProductDetail, ProductId,
    };

    fn detail() -> ProductDetail {
        let id = ProductId::parse("p1").unwrap();
        let eur = Currency::parse("EUR").unwrap();
        ProductDetail {
            product: Product {
                id: id.clone(),
                name: "Kettle".into(),
                description: "Boils water. ".repeat(20),
                category: "kitchen".into(),
                price: Money::new(2599, eur),
                active: true,
                created_at: 1_790_000_000_000,
                updated_at: 1_790_000_000_001,
                version: 3,
            },
            offers: vec![Offer {
                id: OfferId::parse("o1").unwrap(),
                product_id: id,
                status: OfferStatus::Cancelled,
                price: Money::new(1999, eur),
                expires_at: 1_800_000_000_000,
                created_at: 1_790_000_000_000,
                updated_at: 1_790_000_000_000,
                version: 2,
            }],
        }
    }

    #[test]
    fn both_formats_read_back_what_was_written() {
        let value = detail();
        let binary = encode(&value).unwrap();
        assert_eq!(
            decode::<ProductDetail>(FORMAT_BINARY, &binary).unwrap(),
            value
        );
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(decode::<ProductDetail>(FORMAT_JSON, &json).unwrap(), value);
        assert!(
            binary.len() < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        let binary = encode(&detail()).unwrap();
        for cut in [0, 1, binary.len() / 2, binary.len() - 1] {
            assert!(decode::<ProductDetail>(FORMAT_BINARY, &binary[..cut]).is_err());
        }
        let mut longer = binary.clone();
        longer.push(0);
        assert!(decode::<ProductDetail>(FORMAT_BINARY, &longer).is_err());
        assert!(decode::<ProductDetail>(9, &binary).is_err());
        // A product's id is validated when read, in either format.
        let mut bad = detail();
        bad.product.id = ProductId::parse("ok").unwrap();
        let mut bytes = encode(&bad).unwrap();
        if let Some(at) = bytes.windows(2).position(|w| w == b"ok") {
            bytes[at] = b' ';
        }
        assert!(decode::<ProductDetail>(FORMAT_BINARY, &bytes).is_err());
    }
}
