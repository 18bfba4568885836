//! Checks of single values, made with the model's own types so a value is
//! refused at plan time for the reason the control plane would give.

use serde::de::DeserializeOwned;

/// A duration as the model reads it: `250ms`, `5s`, `1m`, `2h`.
pub fn duration(value: &serde_json::Value) -> Result<(), String> {
    parse::<meridian_model::Duration>(value)
}

/// The value deserialises as the model's type `T` (an enum, a bounded integer).
pub fn parse<T: DeserializeOwned>(value: &serde_json::Value) -> Result<(), String> {
    serde_json::from_value::<T>(value.clone())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A DNS-1123 label, as names, namespaces, clusters, regions and zones are.
pub fn label(value: &serde_json::Value) -> Result<(), String> {
    let text = value.as_str().unwrap_or_default();
    meridian_model::ResourceKey::new(meridian_model::Kind::Cluster, None, text, None)
        .map(drop)
        .map_err(|e| match e {
            meridian_model::ModelError::Invalid { message, .. } => message,
            other => other.to_string(),
        })
}

/// The weight of one endpoint: at most the model's maximum.
pub fn endpoint_weight(value: &serde_json::Value) -> Result<(), String> {
    let weight: u32 = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let max = meridian_model::spec::MAX_ENDPOINT_WEIGHT;
    if weight > max {
        return Err(format!("{weight} exceeds the maximum of {max}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_speak_the_model() {
        assert!(duration(&json!("5s")).is_ok());
        assert!(duration(&json!("soon")).is_err());
        let lb = parse::<meridian_model::spec::LbPolicy>(&json!("fastest")).expect_err("bad lb");
        assert!(lb.contains("round_robin"), "{lb}");
        assert!(parse::<u16>(&json!(70000)).is_err());
        assert!(label(&json!("Bad_Name")).is_err());
        assert!(label(&json!("east")).is_ok());
        assert!(endpoint_weight(&json!(2_000_000)).is_err());
    }
}
