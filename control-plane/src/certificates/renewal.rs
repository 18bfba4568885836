//! Whether a certificate may renew itself: only one whose chain was enrolled
//! with a bootstrap token (see [`meridian_identity::enrolment`]) that is
//! still on record, is not revoked, and could grant the caller's identity.
//! Revoking a token therefore ends the renewal of every certificate that
//! descends from it; certificates already issued stay valid until they
//! expire. Pure: the token is read by the caller.

use meridian_identity::enrolment::Enrolment;
use meridian_identity::spiffe::{Identity, SpiffeId};
use meridian_model::spec::{BootstrapTokenSpec, TokenRole};

/// The enrolment a renewal of `id` is checked against, or why `id` cannot
/// renew whatever the replicated state says.
pub fn enrolment_of<'a>(
    id: &SpiffeId,
    enrolment: Option<&'a Enrolment>,
) -> Result<&'a Enrolment, String> {
    match (&id.identity, enrolment) {
        (Identity::Node(_), _) => Err(format!(
            "{id} is a node: node certificates are issued with the CA \
             (meridian certs issue --node), never renewed through the API"
        )),
        (_, None) => Err(format!(
            "{id} was not enrolled with a bootstrap token (it was made with \
             meridian certs issue, or before enrolments were recorded), so \
             nothing could revoke its renewals: issue it again with the CA, \
             or enrol with a token"
        )),
        (_, Some(enrolment)) => Ok(enrolment),
    }
}

/// Why the certificate `id`, enrolled with `enrolment` whose token is now
/// `token` (None if it is gone), may not renew; None if it may. A token's
/// expiry and uses bound only its redemption, not the renewals it started.
pub fn refusal(
    id: &SpiffeId,
    enrolment: &Enrolment,
    token: Option<&BootstrapTokenSpec>,
) -> Option<String> {
    let Some(token) = token else {
        return Some(format!(
            "{id} was enrolled with the token {enrolment}, which no longer exists; \
             enrol again with a new token"
        ));
    };
    if token.revoked {
        return Some(format!(
            "{id} was enrolled with the token {enrolment}, which has been revoked; \
             its certificate stays valid until it expires, and enrolling again \
             needs a new token"
        ));
    }
    let cluster = token.cluster.as_deref();
    let name = token.name.as_deref();
    let granted = match (&id.identity, token.role) {
        (Identity::Proxy { cluster: c, id: n }, TokenRole::Proxy) => {
            cluster == Some(c.as_str()) && name.is_none_or(|bound| bound == n)
        }
        (Identity::Agent { cluster: c }, TokenRole::Agent) => cluster == Some(c.as_str()),
        (Identity::Admin { name: n }, TokenRole::Admin)
        | (Identity::Viewer { name: n }, TokenRole::Viewer) => name.is_none_or(|bound| bound == n),
        _ => false,
    };
    (!granted)
        .then(|| format!("{id} does not match the token {enrolment} it claims to be enrolled with"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(identity: Identity) -> SpiffeId {
        SpiffeId::new("mesh.test", identity).expect("id")
    }
    fn proxy(cluster: &str, name: &str) -> SpiffeId {
        id(Identity::Proxy {
            cluster: cluster.into(),
            id: name.into(),
        })
    }
    fn token(role: TokenRole, cluster: Option<&str>) -> BootstrapTokenSpec {
        BootstrapTokenSpec {
            role,
            cluster: cluster.map(String::from),
            name: None,
            max_uses: 1,
            used: 1,
            expires_at: 0,
            revoked: false,
            secret_sha256: "a".repeat(64),
        }
    }
    fn enrolment() -> Enrolment {
        Enrolment::new("mrd-0123456789ab").expect("enrolment")
    }

    #[test]
    fn only_enrolled_certificates_renew() {
        let e = enrolment();
        assert_eq!(enrolment_of(&proxy("east", "web-1"), Some(&e)), Ok(&e));
        let offline = enrolment_of(&proxy("east", "web-1"), None).expect_err("no enrolment");
        assert!(offline.contains("not enrolled"), "{offline}");
        let admin = id(Identity::Admin {
            name: "alice".into(),
        });
        assert!(enrolment_of(&admin, None).is_err());
        let node = enrolment_of(&id(Identity::Node(3)), Some(&e)).expect_err("node");
        assert!(node.contains("node"), "{node}");
    }

    #[test]
    fn a_used_up_or_expired_token_still_renews_what_it_enrolled() {
        let web = proxy("east", "web-1");
        assert_eq!(
            refusal(
                &web,
                &enrolment(),
                Some(&token(TokenRole::Proxy, Some("east")))
            ),
            None
        );
        let agent = id(Identity::Agent {
            cluster: "east".into(),
        });
        assert_eq!(
            refusal(
                &agent,
                &enrolment(),
                Some(&token(TokenRole::Agent, Some("east")))
            ),
            None
        );
    }

    #[test]
    fn a_revoked_or_deleted_token_ends_the_renewals() {
        let web = proxy("east", "web-1");
        let revoked = BootstrapTokenSpec {
            revoked: true,
            ..token(TokenRole::Proxy, Some("east"))
        };
        let refused = refusal(&web, &enrolment(), Some(&revoked)).expect("revoked");
        assert!(
            refused.contains("revoked") && refused.contains("mrd-0123456789ab"),
            "{refused}"
        );
        let gone = refusal(&web, &enrolment(), None).expect("gone");
        assert!(gone.contains("no longer exists"), "{gone}");
    }

    #[test]
    fn the_token_must_be_able_to_grant_the_identity() {
        let east = token(TokenRole::Proxy, Some("east"));
        assert!(refusal(&proxy("west", "web-1"), &enrolment(), Some(&east)).is_some());
        let bound = BootstrapTokenSpec {
            name: Some("web-2".into()),
            ..east.clone()
        };
        assert!(refusal(&proxy("east", "web-1"), &enrolment(), Some(&bound)).is_some());
        assert!(refusal(&proxy("east", "web-2"), &enrolment(), Some(&bound)).is_none());
        let viewer = id(Identity::Viewer { name: "bob".into() });
        let admin_token = token(TokenRole::Admin, None);
        assert!(refusal(&viewer, &enrolment(), Some(&admin_token)).is_some());
        assert!(refusal(&viewer, &enrolment(), Some(&token(TokenRole::Viewer, None))).is_none());
    }
}
