output "service" {
  description = "The service clients call, NAMESPACE/NAME."
  value       = meridian_service.this.id
}

output "versions" {
  description = "Each version's service, NAMESPACE/NAME."
  value       = { for version, service in meridian_service.version : version => service.id }
}

output "endpoints" {
  description = "The endpoint sets, by VERSION@CLUSTER: their ids, NAMESPACE/NAME@CLUSTER."
  value       = { for key, set in meridian_endpoints.version : key => set.id }
}

output "traffic_split" {
  description = "The split between the versions, NAMESPACE/NAME."
  value       = meridian_traffic_split.this.id
}

output "failover_policies" {
  description = "Each version's failover policy, NAMESPACE/NAME."
  value       = { for version, policy in meridian_failover_policy.version : version => policy.id }
}
