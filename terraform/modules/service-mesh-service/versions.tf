terraform {
  required_version = ">= 1.0"
  required_providers {
    meridian = {
      source = "meridian/meridian"
    }
  }
}
