//! The `tfplugin6.Provider` service: Terraform's calls decoded, handed to the
//! resource or data source they name, and answered with values and
//! diagnostics.

use crate::admin::Admin;
use crate::config;
use crate::data_sources::{self, DataSource};
use crate::diag::{self, Diag};
use crate::msgpack::{decode_dynamic, encode};
use crate::proto::tfplugin6 as tf;
use crate::resources::{self, object::Outcome, Resource};
use crate::schema::{schema, Block};
use crate::value::{Type, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Reads a variable of the provider's environment.
pub type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct Provider {
    resources: BTreeMap<&'static str, Resource>,
    data_sources: BTreeMap<&'static str, DataSource>,
    config: Block,
    env: Env,
    admin: RwLock<Option<Arc<Admin>>>,
    /// Set by `StopProvider`: calls in flight give up, and the plugin exits.
    stop: watch::Sender<bool>,
}

fn dynamic(value: &Value, ty: &Type) -> Option<tf::DynamicValue> {
    Some(tf::DynamicValue {
        msgpack: encode(value, ty),
        json: Vec::new(),
    })
}

fn decode(value: Option<&tf::DynamicValue>, ty: &Type) -> Result<Value, Diag> {
    match value {
        None => Ok(Value::Null),
        Some(v) => decode_dynamic(&v.msgpack, &v.json, ty)
            .map_err(|e| Diag::error("Cannot read Terraform's value", e.to_string())),
    }
}

impl Provider {
    pub fn new(env: Env, stop: watch::Sender<bool>) -> Provider {
        Provider {
            resources: resources::all().into_iter().collect(),
            data_sources: data_sources::all().into_iter().collect(),
            config: config::schema(),
            env,
            admin: RwLock::new(None),
            stop,
        }
    }

    fn resource(&self, name: &str) -> Result<&Resource, Diag> {
        self.resources.get(name).ok_or_else(|| {
            Diag::error(
                "Unknown resource type",
                format!("this provider has no resource {name}"),
            )
        })
    }

    fn data_source(&self, name: &str) -> Result<&DataSource, Diag> {
        self.data_sources.get(name).ok_or_else(|| {
            Diag::error(
                "Unknown data source",
                format!("this provider has no data source {name}"),
            )
        })
    }

    fn admin(&self) -> Result<Arc<Admin>, Diag> {
        let admin = self
            .admin
            .read()
            .map_err(|_| Diag::error("Internal error", "a lock was poisoned"))?;
        admin.clone().ok_or_else(|| {
            Diag::error(
                "Provider not configured",
                "Terraform did not configure the meridian provider before using it",
            )
        })
    }

    /// Runs `work` unless `StopProvider` comes first.
    async fn unless_stopped(
        &self,
        fallback: &Value,
        work: impl std::future::Future<Output = Outcome>,
    ) -> Outcome {
        let mut stopped = self.stop.subscribe();
        tokio::select! {
            outcome = work => outcome,
            _ = stopped.wait_for(|s| *s) => (
                fallback.clone(),
                vec![Diag::error("Stopped", "Terraform asked the provider to stop")],
            ),
        }
    }
}

#[tonic::async_trait]
impl tf::provider_server::Provider for Provider {
    async fn get_provider_schema(
        &self,
        _request: Request<tf::get_provider_schema::Request>,
    ) -> Result<Response<tf::get_provider_schema::Response>, Status> {
        Ok(Response::new(tf::get_provider_schema::Response {
            provider: Some(schema(&self.config)),
            resource_schemas: self
                .resources
                .iter()
                .map(|(k, r)| (k.to_string(), schema(r.block())))
                .collect(),
            data_source_schemas: self
                .data_sources
                .iter()
                .map(|(k, d)| (k.to_string(), schema(d.block())))
                .collect(),
            diagnostics: Vec::new(),
            provider_meta: None,
        }))
    }

    async fn validate_provider_config(
        &self,
        request: Request<tf::validate_provider_config::Request>,
    ) -> Result<Response<tf::validate_provider_config::Response>, Status> {
        let diags = match decode(request.get_ref().config.as_ref(), &self.config.ty()) {
            Ok(config) => config::validate(&config),
            Err(d) => vec![d],
        };
        Ok(Response::new(tf::validate_provider_config::Response {
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn configure_provider(
        &self,
        request: Request<tf::configure_provider::Request>,
    ) -> Result<Response<tf::configure_provider::Response>, Status> {
        let configured = decode(request.get_ref().config.as_ref(), &self.config.ty())
            .map_err(|d| vec![d])
            .and_then(|value| config::resolve(&value, &self.env))
            .and_then(|config| {
                let dialer = config.dialer().map_err(|d| vec![d])?;
                Ok(Admin::new(config.servers, dialer))
            });
        let diags = match configured {
            Ok(admin) => match self.admin.write() {
                Ok(mut slot) => {
                    *slot = Some(Arc::new(admin));
                    Vec::new()
                }
                Err(_) => vec![Diag::error("Internal error", "a lock was poisoned")],
            },
            Err(diags) => diags,
        };
        Ok(Response::new(tf::configure_provider::Response {
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn validate_resource_config(
        &self,
        request: Request<tf::validate_resource_config::Request>,
    ) -> Result<Response<tf::validate_resource_config::Response>, Status> {
        let request = request.into_inner();
        let diags = self
            .resource(&request.type_name)
            .and_then(|r| Ok((r, decode(request.config.as_ref(), &r.block().ty())?)))
            .map(|(r, config)| r.validate(&config))
            .unwrap_or_else(|d| vec![d]);
        Ok(Response::new(tf::validate_resource_config::Response {
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn validate_data_resource_config(
        &self,
        request: Request<tf::validate_data_resource_config::Request>,
    ) -> Result<Response<tf::validate_data_resource_config::Response>, Status> {
        let request = request.into_inner();
        let diags = self
            .data_source(&request.type_name)
            .and_then(|d| Ok((d, decode(request.config.as_ref(), &d.block().ty())?)))
            .map(|(d, config)| d.validate(&config))
            .unwrap_or_else(|d| vec![d]);
        Ok(Response::new(tf::validate_data_resource_config::Response {
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn upgrade_resource_state(
        &self,
        request: Request<tf::upgrade_resource_state::Request>,
    ) -> Result<Response<tf::upgrade_resource_state::Response>, Status> {
        let request = request.into_inner();
        let json = request.raw_state.map(|r| r.json).unwrap_or_default();
        // Version 0 is the only schema so far: the state is read as it is,
        // dropping any attribute the schema no longer has.
        let (state, diags) = match self.resource(&request.type_name) {
            Ok(r) => match decode_dynamic(&[], &json, &r.block().ty()) {
                Ok(value) => (dynamic(&value, &r.block().ty()), Vec::new()),
                Err(e) => (
                    None,
                    vec![Diag::error("Cannot read the stored state", e.to_string())],
                ),
            },
            Err(d) => (None, vec![d]),
        };
        Ok(Response::new(tf::upgrade_resource_state::Response {
            upgraded_state: state,
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn read_resource(
        &self,
        request: Request<tf::read_resource::Request>,
    ) -> Result<Response<tf::read_resource::Response>, Status> {
        let request = request.into_inner();
        let (state, diags) = match self.resource(&request.type_name) {
            Err(d) => (None, vec![d]),
            Ok(r) => {
                let ty = r.block().ty();
                match (decode(request.current_state.as_ref(), &ty), self.admin()) {
                    (Ok(current), Ok(admin)) => {
                        let (state, diags) = self
                            .unless_stopped(&current, r.read(&admin, &current))
                            .await;
                        (dynamic(&state, &ty), diags)
                    }
                    (Err(d), _) | (_, Err(d)) => (request.current_state.clone(), vec![d]),
                }
            }
        };
        Ok(Response::new(tf::read_resource::Response {
            new_state: state,
            diagnostics: diag::to_proto(&diags),
            private: request.private,
        }))
    }

    async fn plan_resource_change(
        &self,
        request: Request<tf::plan_resource_change::Request>,
    ) -> Result<Response<tf::plan_resource_change::Response>, Status> {
        let request = request.into_inner();
        let planned = self.resource(&request.type_name).and_then(|r| {
            let ty = r.block().ty();
            let prior = decode(request.prior_state.as_ref(), &ty)?;
            let config = decode(request.config.as_ref(), &ty)?;
            let (planned, replace, diags) = r.plan(&prior, &config);
            Ok((dynamic(&planned, &ty), replace, diags))
        });
        let (planned, replace, diags) = planned.unwrap_or_else(|d| (None, Vec::new(), vec![d]));
        let planned = if diag::has_errors(&diags) {
            request.proposed_new_state
        } else {
            planned
        };
        Ok(Response::new(tf::plan_resource_change::Response {
            planned_state: planned,
            requires_replace: replace.iter().map(|p| p.to_proto()).collect(),
            planned_private: request.prior_private,
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn apply_resource_change(
        &self,
        request: Request<tf::apply_resource_change::Request>,
    ) -> Result<Response<tf::apply_resource_change::Response>, Status> {
        let request = request.into_inner();
        let (state, diags) = match self.resource(&request.type_name) {
            Err(d) => (request.prior_state.clone(), vec![d]),
            Ok(r) => {
                let ty = r.block().ty();
                let values = decode(request.prior_state.as_ref(), &ty)
                    .and_then(|prior| Ok((prior, decode(request.planned_state.as_ref(), &ty)?)));
                match (values, self.admin()) {
                    (Ok((prior, planned)), Ok(admin)) => {
                        let (state, diags) = self
                            .unless_stopped(&prior, r.apply(&admin, &prior, &planned))
                            .await;
                        (dynamic(&state, &ty), diags)
                    }
                    (Err(d), _) | (_, Err(d)) => (request.prior_state.clone(), vec![d]),
                }
            }
        };
        Ok(Response::new(tf::apply_resource_change::Response {
            new_state: state,
            private: request.planned_private,
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn import_resource_state(
        &self,
        request: Request<tf::import_resource_state::Request>,
    ) -> Result<Response<tf::import_resource_state::Response>, Status> {
        let request = request.into_inner();
        let (imported, diags) = match (self.resource(&request.type_name), self.admin()) {
            (Ok(r), Ok(admin)) => {
                let (state, diags) = self
                    .unless_stopped(&Value::Null, r.import(&admin, &request.id))
                    .await;
                let imported = if state.is_null() {
                    Vec::new()
                } else {
                    vec![tf::import_resource_state::ImportedResource {
                        type_name: request.type_name.clone(),
                        state: dynamic(&state, &r.block().ty()),
                        private: Vec::new(),
                    }]
                };
                (imported, diags)
            }
            (Err(d), _) | (_, Err(d)) => (Vec::new(), vec![d]),
        };
        Ok(Response::new(tf::import_resource_state::Response {
            imported_resources: imported,
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn read_data_source(
        &self,
        request: Request<tf::read_data_source::Request>,
    ) -> Result<Response<tf::read_data_source::Response>, Status> {
        let request = request.into_inner();
        let (state, diags) = match (self.data_source(&request.type_name), self.admin()) {
            (Ok(d), Ok(admin)) => {
                let ty = d.block().ty();
                match decode(request.config.as_ref(), &ty) {
                    Ok(config) => {
                        let (state, diags) = self
                            .unless_stopped(&Value::Null, d.read(&admin, &config))
                            .await;
                        (dynamic(&state, &ty), diags)
                    }
                    Err(e) => (None, vec![e]),
                }
            }
            (Err(d), _) | (_, Err(d)) => (None, vec![d]),
        };
        Ok(Response::new(tf::read_data_source::Response {
            state,
            diagnostics: diag::to_proto(&diags),
        }))
    }

    async fn stop_provider(
        &self,
        _request: Request<tf::stop_provider::Request>,
    ) -> Result<Response<tf::stop_provider::Response>, Status> {
        tracing::info!("Terraform asked the provider to stop");
        self.stop.send_replace(true);
        Ok(Response::new(tf::stop_provider::Response {
            error: String::new(),
        }))
    }
}
