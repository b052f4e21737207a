{{/*
Chart name, truncated to 63 characters.
*/}}
{{- define "conclavium.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or the release name if it already contains the chart name.
*/}}
{{- define "conclavium.fullname" -}}
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
Name of a component's resources: <fullname>-<component>. Call with (dict "ctx" $ "component" "gateway").
*/}}
{{- define "conclavium.componentName" -}}
{{- printf "%s-%s" (include "conclavium.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "conclavium.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels (app.kubernetes.io/*) for every resource.
*/}}
{{- define "conclavium.labels" -}}
helm.sh/chart: {{ include "conclavium.chart" . }}
{{ include "conclavium.selectorLabels" . }}
app.kubernetes.io/version: {{ include "conclavium.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: conclavium
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "conclavium.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conclavium.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component. Call with (dict "ctx" $ "component" "gateway").
*/}}
{{- define "conclavium.componentLabels" -}}
{{ include "conclavium.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "conclavium.componentSelectorLabels" -}}
{{ include "conclavium.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "conclavium.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "conclavium.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "conclavium.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "conclavium.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conclavium.componentName" (dict "ctx" . "component" "operator")) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Namespaces the operator watches: operator.watchNamespaces, or the release namespace.
*/}}
{{- define "conclavium.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- join "," .Values.operator.watchNamespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "conclavium.peeringName" -}}
{{- default (include "conclavium.fullname" .) .Values.operator.peering.name }}
{{- end }}

{{/*
Environment shared by the services (and passed on by the operator to the nodes it creates):
ledger id, NATS, stream replicas, Redis, logging.
*/}}
{{- define "conclavium.commonEnv" -}}
- name: CONCLAVIUM_LEDGER
  value: {{ .Values.ledgerId | quote }}
- name: CONCLAVIUM_NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: CONCLAVIUM_STREAM_REPLICAS
  value: {{ .Values.nats.streamReplicas | quote }}
{{- if .Values.nats.credentialsSecret.name }}
- name: CONCLAVIUM_NATS_CREDS
  value: /etc/conclavium/nats/{{ .Values.nats.credentialsSecret.key }}
{{- end }}
{{- if .Values.nats.tlsSecret.name }}
- name: CONCLAVIUM_NATS_CA
  value: /etc/conclavium/nats-tls/ca.crt
{{- end }}
- name: CONCLAVIUM_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- if .Values.redis.passwordSecret.name }}
- name: CONCLAVIUM_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.passwordSecret.name }}
      key: {{ .Values.redis.passwordSecret.key }}
{{- end }}
- name: CONCLAVIUM_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/*
Volumes for NATS credentials/CA and a writable /tmp (the root filesystem is read-only).
*/}}
{{- define "conclavium.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.nats.credentialsSecret.name }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.credentialsSecret.name }}
{{- end }}
{{- if .Values.nats.tlsSecret.name }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tlsSecret.name }}
{{- end }}
{{- end }}

{{- define "conclavium.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.nats.credentialsSecret.name }}
- name: nats-creds
  mountPath: /etc/conclavium/nats
  readOnly: true
{{- end }}
{{- if .Values.nats.tlsSecret.name }}
- name: nats-tls
  mountPath: /etc/conclavium/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
Soft spread of a component's replicas across nodes. Call with (dict "ctx" $ "component" "gateway").
*/}}
{{- define "conclavium.topologySpread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "conclavium.componentSelectorLabels" . | nindent 6 }}
{{- end }}

{{/*
True when the cluster serves the Prometheus Operator API (or --api-versions says so).
*/}}
{{- define "conclavium.hasMonitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{- end }}
{{- end }}
