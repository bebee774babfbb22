//! Money as integer minor units with an ISO 4217 currency; never floating point.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::validation::ValidationError;

/// An ISO 4217 alphabetic currency code, e.g. `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "EUR", pattern = "^[A-Z]{3}$"))]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses three upper-case ASCII letters.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Currency([a, b, c])),
            _ => Err(ValidationError::new(
                "currency",
                "must be a three-letter ISO 4217 code such as EUR",
            )),
        }
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = ValidationError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Currency::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in the currency's minor unit (cents for EUR and USD).
///
/// Read only from a map (`{"amount_minor": .., "currency": ..}`): a derived `Deserialize`
/// would also take a sequence (`[1999, "EUR"]`), which the API documents as invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Money {
    /// Amount in minor units; prices are never negative.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 10_000_000_000_000_i64)
    )]
    pub amount_minor: i64,
    /// Currency of the amount.
    pub currency: Currency,
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a map (JSON, DynamoDB); a sequence only from a binary format (postcard writes
        /// a struct's fields in order, without names).
        struct MoneyVisitor {
            human_readable: bool,
        }

        impl<'de> serde::de::Visitor<'de> for MoneyVisitor {
            type Value = Money;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with amount_minor and currency")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Money, A::Error> {
                use serde::de::Error;
                if self.human_readable {
                    return Err(A::Error::invalid_type(serde::de::Unexpected::Seq, &self));
                }
                let amount_minor = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let currency = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                Ok(Money {
                    amount_minor,
                    currency,
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Money, A::Error> {
                use serde::de::Error;
                let (mut amount_minor, mut currency) = (None, None);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "amount_minor" if amount_minor.is_none() => {
                            amount_minor = Some(map.next_value()?);
                        }
                        "currency" if currency.is_none() => currency = Some(map.next_value()?),
                        "amount_minor" | "currency" => {
                            return Err(A::Error::custom(format!("duplicate field `{key}`")));
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Money {
                    amount_minor: amount_minor
                        .ok_or_else(|| A::Error::missing_field("amount_minor"))?,
                    currency: currency.ok_or_else(|| A::Error::missing_field("currency"))?,
                })
            }
        }

        let human_readable = deserializer.is_human_readable();
        deserializer.deserialize_struct(
            "Money",
            &["amount_minor", "currency"],
            MoneyVisitor { human_readable },
        )
    }
}

/// Largest accepted amount: 10^13 minor units, far above any price and far below `i64::MAX`
/// so sums of a few thousand prices cannot overflow.
const MAX_AMOUNT_MINOR: i64 = 10_000_000_000_000;

impl Money {
    /// An amount of `amount_minor` in `currency`.
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Money {
            amount_minor,
            currency,
        }
    }

    /// Prices must be between zero and 10^13 minor units.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if (0..=MAX_AMOUNT_MINOR).contains(&self.amount_minor) {
            Ok(())
        } else {
            Err(ValidationError::new(
                "price",
                "amount_minor must be between 0 and 10^13",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_from_an_object_only() {
        let money: Money =
            serde_json::from_str(r#"{"amount_minor": 1999, "currency": "EUR", "extra": 1}"#)
                .unwrap();
        assert_eq!(money, Money::new(1999, Currency::parse("EUR").unwrap()));
        for bad in [
            r#"[1999, "EUR"]"#,
            r#"{"amount_minor": 1999}"#,
            r#"{"amount_minor": 1, "amount_minor": 2, "currency": "EUR"}"#,
            r#"{"amount_minor": 1, "currency": "eur"}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn negative_prices_are_invalid() {
        let eur = Currency::parse("EUR").unwrap();
        assert!(Money::new(0, eur).validate().is_ok());
        assert!(Money::new(-1, eur).validate().is_err());
    }

    #[test]
    fn money_serializes_as_minor_units_and_code() {
        let json =
            serde_json::to_string(&Money::new(1999, Currency::parse("USD").unwrap())).unwrap();
        assert_eq!(json, r#"{"amount_minor":1999,"currency":"USD"}"#);
    }
}
