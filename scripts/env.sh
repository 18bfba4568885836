# Shared by the scripts: one cargo target directory outside the clone, so CI
# on a developer's machine rebuilds only what changed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meridian/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Terraform 1.0.3 as scripts/setup installs it, for the provider's tests.
export MERIDIAN_TERRAFORM="${MERIDIAN_TERRAFORM:-$HOME/.cache/meridian/terraform/terraform}"
