//! Meridian's Terraform provider: the Terraform plugin protocol 6 served
//! with the workspace's own tonic, each resource a Meridian object written
//! through the admin API with the model's validation at plan time.

pub mod admin;
pub mod checks;
pub mod config;
pub mod data_sources;
pub mod diag;
pub mod manifest;
pub mod msgpack;
pub mod plugin;
pub mod provider;
pub mod resources;
pub mod schema;
pub mod semantic;
pub mod value;

/// Generated code of the Terraform plugin protocol and go-plugin's services.
#[allow(clippy::all)]
pub mod proto {
    pub mod tfplugin6 {
        tonic::include_proto!("tfplugin6");
    }
    pub mod plugin {
        tonic::include_proto!("plugin");
    }
}
