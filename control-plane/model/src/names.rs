//! Name rules: resource, namespace and cluster names are DNS-1123 labels,
//! as in Kubernetes, so they fit in hostnames, SPIFFE IDs and xDS names.

use crate::ModelError;

pub const MAX_NAME_LEN: usize = 63;

pub fn check_label(field: &str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() {
        return Err(ModelError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ModelError::invalid(
            field,
            format!("'{value}' is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let bytes = value.as_bytes();
    let valid_ends =
        bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !valid_chars || !valid_ends {
        return Err(ModelError::invalid(
            field,
            format!(
                "'{value}' is not a valid name (lowercase letters, digits and '-', starting and ending with a letter or digit)"
            ),
        ));
    }
    Ok(())
}

/// A reference to a service, `namespace/name`, or `name` in the referrer's namespace.
pub fn parse_service_ref(
    field: &str,
    text: &str,
    default_namespace: &str,
) -> Result<(String, String), ModelError> {
    let (namespace, name) = match text.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (default_namespace, text),
    };
    check_label(field, namespace)?;
    check_label(field, name)?;
    Ok((namespace.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_rejects() {
        assert!(check_label("n", "checkout-v2").is_ok());
        for bad in ["", "Checkout", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_label("n", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_refs() {
        assert_eq!(
            parse_service_ref("s", "shop/checkout", "x").expect("valid"),
            ("shop".into(), "checkout".into())
        );
        assert_eq!(
            parse_service_ref("s", "checkout", "shop").expect("valid"),
            ("shop".into(), "checkout".into())
        );
        assert!(parse_service_ref("s", "a/b/c", "x").is_err());
    }

    proptest! {
        #[test]
        fn valid_labels_pass(name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assert!(check_label("n", &name).is_ok());
        }

        #[test]
        fn never_panics(name in "\\PC{0,80}") {
            let _ = check_label("n", &name);
        }
    }
}
