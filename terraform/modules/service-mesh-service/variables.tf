variable "namespace" {
  description = "The namespace of the service and of everything the module makes."
  type        = string
  default     = "default"
}

variable "name" {
  description = "The service clients call, as NAME.NAMESPACE; each version is the service NAME-VERSION."
  type        = string
}

variable "protocol" {
  description = "http, http2, grpc or tcp."
  type        = string
  default     = "http"
}

variable "port" {
  description = "The port clients call, and the versions' port."
  type        = number
}

variable "lb" {
  description = "The versions' load-balancing policy: round_robin, random, weighted, least_request, ip_hash, ring_hash or maglev."
  type        = string
  default     = "round_robin"
}

variable "timeout" {
  description = "The request timeout (250ms, 5s, 1m), or null for none."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels on every object the module makes."
  type        = map(string)
  default     = {}
}

variable "versions" {
  description = "Each version: its weight in the split, and its endpoints per member cluster (the cluster must exist)."
  type = map(object({
    weight = number
    endpoints = map(list(object({
      address = string
      port    = number
    })))
  }))

  validation {
    condition     = length(var.versions) > 0
    error_message = "Give at least one version."
  }
}

variable "failover_order" {
  description = "Member clusters in the order the versions' traffic falls back to them; no failover policy when empty."
  type        = list(string)
  default     = []
}
