//! Outcome data as both stores keep it: a JSON object in a text column,
//! NULL when empty. Text, not a database JSON type, because an event's
//! audit record hashes the bytes as stored.

use crate::store::StoreError;
use serde_json::{Map, Value};

/// The column's value for `data`: `None` when empty.
pub(crate) fn encode(data: &Map<String, Value>) -> Option<String> {
    (!data.is_empty()).then(|| Value::Object(data.clone()).to_string())
}

/// The column's value read back; `column` names it in the error.
pub(crate) fn decode(
    text: Option<&str>,
    column: &'static str,
) -> Result<Map<String, Value>, StoreError> {
    match text {
        None => Ok(Map::new()),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(StoreError::Corrupt(format!(
                "{column} is not a JSON object"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_data_round_trips_and_empty_is_null() {
        let data = serde_json::json!({"importo_dovuto": 120.5, "numero": "C-1"});
        let data = data.as_object().unwrap();
        let text = encode(data).unwrap();
        assert_eq!(&decode(Some(&text), "x").unwrap(), data);
        assert_eq!(encode(&Map::new()), None);
        assert!(decode(None, "x").unwrap().is_empty());
        assert!(decode(Some("[1]"), "practices.outcome_data").is_err());
    }
}
