# One service as a platform team ships it: the name clients call, a service
# per version with its endpoints in several clusters, a traffic split
# between the versions, and a failover order for each version.

locals {
  endpoint_sets = merge([
    for version, spec in var.versions : {
      for cluster, endpoints in spec.endpoints : "${version}@${cluster}" => {
        version   = version
        cluster   = cluster
        endpoints = endpoints
      }
    }
  ]...)
}

resource "meridian_service" "this" {
  namespace = var.namespace
  name      = var.name
  protocol  = var.protocol
  port      = var.port
  labels    = var.labels
}

resource "meridian_service" "version" {
  for_each = var.versions

  namespace = var.namespace
  name      = "${var.name}-${each.key}"
  protocol  = var.protocol
  port      = var.port
  lb        = var.lb
  timeout   = var.timeout
  labels    = merge(var.labels, { version = each.key })
}

resource "meridian_endpoints" "version" {
  for_each = local.endpoint_sets

  namespace = var.namespace
  service   = meridian_service.version[each.value.version].name
  cluster   = each.value.cluster
  labels    = var.labels

  dynamic "endpoint" {
    for_each = each.value.endpoints
    content {
      address = endpoint.value.address
      port    = endpoint.value.port
    }
  }
}

resource "meridian_traffic_split" "this" {
  namespace = var.namespace
  name      = var.name
  service   = "${var.namespace}/${meridian_service.this.name}"
  labels    = var.labels

  dynamic "backend" {
    for_each = var.versions
    content {
      service = "${var.namespace}/${meridian_service.version[backend.key].name}"
      weight  = backend.value.weight
    }
  }
}

resource "meridian_failover_policy" "version" {
  for_each = length(var.failover_order) > 0 ? var.versions : {}

  namespace = var.namespace
  name      = meridian_service.version[each.key].name
  service   = "${var.namespace}/${meridian_service.version[each.key].name}"
  order     = var.failover_order
  labels    = var.labels
}
