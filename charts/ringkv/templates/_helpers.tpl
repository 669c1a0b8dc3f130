{{/*
The chart's name, or nameOverride.
*/}}
{{- define "ringkv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified name, at most 63 characters (a DNS label): fullnameOverride,
else the release name when it already holds the chart's name, else
<release>-<chart>.
*/}}
{{- define "ringkv.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ringkv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "ringkv.labels" -}}
helm.sh/chart: {{ include "ringkv.chart" . }}
{{ include "ringkv.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ringkv
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator pods' selector. Its name label is fixed: the KVClusters'
NetworkPolicies let in pods named ringkv-operator from the operator's namespace.
*/}}
{{- define "ringkv.selectorLabels" -}}
app.kubernetes.io/name: ringkv-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ringkv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringkv.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ringkv.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ringkv.nodeImage" -}}
{{- default (printf "ringkv/node:%s" .Chart.AppVersion) .Values.nodeImage }}
{{- end }}

{{/*
The namespaces a namespaced operator watches: watchNamespaces, else the
release's own.
*/}}
{{- define "ringkv.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- join "," .Values.operator.watchNamespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
What the operator does in a namespace it watches: its KVClusters, the objects
it owns, the pods it watches, its events. Granted cluster-wide by a
ClusterRole, or per watched namespace by Roles.
*/}}
{{- define "ringkv.namespacedRules" -}}
- apiGroups: ["ringkv.io"]
  resources: ["kvclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["ringkv.io"]
  resources: ["kvclusters/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ringkv.io"]
  resources: ["kvbackups"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["ringkv.io"]
  resources: ["kvbackups/status"]
  verbs: ["get", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
What it reads cluster-wide in any case: StorageClasses (volume expansion),
Nodes (zones), and the CRDs and namespaces kopf follows.
*/}}
{{- define "ringkv.clusterRules" -}}
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
<fullname>-<suffix>, the full name shortened so that the whole stays a DNS label (63).
  {{ include "ringkv.suffixed" (list . "config") }}
*/}}
{{- define "ringkv.suffixed" -}}
{{- $root := index . 0 }}{{- $suffix := index . 1 }}
{{- $room := int (sub 62 (len $suffix)) }}
{{- printf "%s-%s" (include "ringkv.fullname" $root | trunc $room | trimSuffix "-") $suffix }}
{{- end }}
