{{/*
Chart name, truncated to the 63 characters of a label value.
*/}}
{{- define "local-pv-provisioner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name, plus the chart name
unless the release name already contains it; 63 characters at most.
*/}}
{{- define "local-pv-provisioner.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "local-pv-provisioner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "local-pv-provisioner.labels" -}}
helm.sh/chart: {{ include "local-pv-provisioner.chart" . }}
{{ include "local-pv-provisioner.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the release's pods.
*/}}
{{- define "local-pv-provisioner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "local-pv-provisioner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "local-pv-provisioner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "local-pv-provisioner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "local-pv-provisioner.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Common part of the ServiceMonitor endpoint and the PodMonitor podMetricsEndpoint
(after "port"). Called with the monitor's values.
*/}}
{{- define "local-pv-provisioner.scrapeEndpoint" -}}
path: /metrics
scheme: http
{{- with .interval }}
interval: {{ . }}
{{- end }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
"true" when the API server serves admissionregistration.k8s.io/v1
ValidatingAdmissionPolicy: listed by discovery (helm install, upgrade), or,
where nothing is discovered (helm template), a Kubernetes version of 1.30 or
later, where that API is GA.
*/}}
{{- define "local-pv-provisioner.admissionPolicyServed" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" }}true
{{- else if and (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1") (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}true
{{- end }}
{{- end }}

{{/*
Full name of the node-cleanup objects: the full name plus "-node-cleanup",
63 characters at most.
*/}}
{{- define "local-pv-provisioner.nodeCleanup.fullname" -}}
{{- printf "%s-node-cleanup" (include "local-pv-provisioner.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every node-cleanup object.
*/}}
{{- define "local-pv-provisioner.nodeCleanup.labels" -}}
{{ include "local-pv-provisioner.labels" . }}
app.kubernetes.io/component: node-cleanup
{{- end }}

{{/*
Labels that select the node-cleanup pods. Their name differs from the
provisioner's (name plus "-node-cleanup"), so the DaemonSet's selector
(name and instance, immutable) and the metrics Service never take them.
*/}}
{{- define "local-pv-provisioner.nodeCleanup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "local-pv-provisioner.name" . }}-node-cleanup
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-cleanup
{{- end }}

{{/*
Name of the ServiceAccount the node-cleanup pods run as.
*/}}
{{- define "local-pv-provisioner.nodeCleanup.serviceAccountName" -}}
{{- if .Values.nodeCleanup.serviceAccount.create }}
{{- default (include "local-pv-provisioner.nodeCleanup.fullname" .) .Values.nodeCleanup.serviceAccount.name }}
{{- else }}
{{- required "nodeCleanup.serviceAccount.name is required when nodeCleanup.serviceAccount.create is false" .Values.nodeCleanup.serviceAccount.name }}
{{- end }}
{{- end }}
