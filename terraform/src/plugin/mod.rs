//! The plugin side of HashiCorp's go-plugin, which Terraform starts
//! providers with: the environment it sets, the handshake line on stdout,
//! AutoMTLS, and the services it expects beside the provider.

pub mod automtls;
pub mod handshake;
pub mod serve;
pub mod services;
