//go:build tools

// Package helm pins helm. A wrapper module because `go install
// helm.sh/helm/v3/cmd/helm@v` first asks the module proxy for the longer path,
// which our proxy answers with 403 instead of 404.
package helm

import _ "helm.sh/helm/v3/cmd/helm"
