# A checkout service in two regions: 90% of its traffic to v1 and 10% to
# v2, each version with endpoints in both regions, and each falling back
# from us-east-1a to eu-west-1a when its local endpoints fail.

terraform {
  required_version = ">= 1.0"
  required_providers {
    meridian = {
      source = "meridian/meridian"
    }
  }
}

# Servers and TLS files come from MERIDIAN_SERVER, MERIDIAN_CERT,
# MERIDIAN_KEY and MERIDIAN_TRUST_BUNDLE, as for the CLI.
provider "meridian" {}

resource "meridian_cluster" "east" {
  name   = "us-east-1a"
  region = "us-east-1"
  zone   = "us-east-1a"
}

resource "meridian_cluster" "west" {
  name   = "eu-west-1a"
  region = "eu-west-1"
  zone   = "eu-west-1a"
}

module "checkout" {
  source = "../../modules/service-mesh-service"

  namespace = "store"
  name      = "checkout"
  port      = 8080
  timeout   = "5s"
  labels    = { team = "payments" }

  versions = {
    v1 = {
      weight = 90
      endpoints = {
        (meridian_cluster.east.name) = [
          { address = "10.0.0.7", port = 8080 },
          { address = "10.0.0.8", port = 8080 },
        ]
        (meridian_cluster.west.name) = [
          { address = "10.1.0.7", port = 8080 },
        ]
      }
    }
    v2 = {
      weight = 10
      endpoints = {
        (meridian_cluster.east.name) = [{ address = "10.0.0.9", port = 8080 }]
        (meridian_cluster.west.name) = [{ address = "10.1.0.9", port = 8080 }]
      }
    }
  }

  failover_order = [meridian_cluster.east.name, meridian_cluster.west.name]
}

output "checkout" {
  value = module.checkout.service
}

output "split" {
  value = module.checkout.traffic_split
}

output "endpoints" {
  value = module.checkout.endpoints
}
