//! Validated identifiers. Holding one proves the string is safe to put in a key.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validation::{ValidationError, slug};

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$"))]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id: 1 to 64 of `[A-Za-z0-9_-]`.
            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                slug($field, raw)?;
                Ok($name(raw.to_owned()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;

            fn try_from(raw: String) -> Result<Self, Self::Error> {
                slug($field, &raw)?;
                Ok($name(raw))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                $name::parse(raw)
            }
        }
    };
}

validated_id!(
    /// Identifies a product.
    ProductId,
    "product id"
);
validated_id!(
    /// Identifies an offer, unique across products.
    OfferId,
    "offer id"
);
validated_id!(
    /// Identifies one view event; used to count each view once.
    EventId,
    "event id"
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_slugs_and_rejects_key_breaking_characters() {
        assert!(ProductId::parse("sku-123_A").is_ok());
        for bad in [
            "",
            "a b",
            "a*",
            "a\nb",
            "a:b",
            "{tag}",
            "é",
            &"x".repeat(65),
        ] {
            let err = ProductId::parse(bad).unwrap_err();
            assert_eq!(err.field, "product id", "{bad:?}");
        }
        assert!(ProductId::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<OfferId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<OfferId>("\"not ok\"").is_err());
    }

    proptest! {
        #[test]
        fn any_parsed_id_is_key_safe(raw in ".{0,80}") {
            if let Ok(id) = ProductId::parse(&raw) {
                prop_assert!(id.as_str().len() <= 64 && !id.as_str().is_empty());
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            }
        }
    }
}
