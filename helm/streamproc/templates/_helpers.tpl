{{/* Names are cut to 63 characters: Kubernetes label values and DNS names allow no more. */}}
{{- define "streamproc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamproc.fullname" -}}
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

{{/* "<fullname>-<component>", cut so that the suffix always survives. */}}
{{- define "streamproc.componentName" -}}
{{- $root := index . 0 }}{{ $component := index . 1 }}
{{- printf "%s-%s" (include "streamproc.fullname" $root | trunc (int (sub 62 (len $component))) | trimSuffix "-") $component }}
{{- end }}

{{- define "streamproc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "streamproc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "streamproc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (list $ "worker"). */}}
{{- define "streamproc.componentLabels" -}}
{{ include "streamproc.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "streamproc.componentSelectorLabels" -}}
{{ include "streamproc.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "streamproc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamproc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamproc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The model server the services call: the in-chart vLLM unless inference.baseUrl is set. */}}
{{- define "streamproc.inferenceBaseUrl" -}}
{{- if .Values.inference.baseUrl }}
{{- .Values.inference.baseUrl }}
{{- else if .Values.vllm.enabled }}
{{- printf "http://%s:%d/v1" (include "streamproc.componentName" (list . "vllm")) (int .Values.vllm.service.port) }}
{{- else }}
{{- fail "inference.baseUrl is required when vllm.enabled is false: set it to the OpenAI-compatible API root of your model server" }}
{{- end }}
{{- end }}

{{/* The embedding server (embedding_probe packs): the in-chart one, else the model server. */}}
{{- define "streamproc.embeddingBaseUrl" -}}
{{- if .Values.embedding.enabled }}
{{- printf "http://%s:%d/v1" (include "streamproc.componentName" (list . "embedding")) (int (.Values.embedding.server.service | default .Values.vllm.service).port) }}
{{- end }}
{{- end }}

{{- define "streamproc.inferenceModel" -}}
{{- default .Values.vllm.servedModelName .Values.inference.model }}
{{- end }}

{{/* Secret and key holding the model server's API key; empty when there is none. */}}
{{- define "streamproc.apiKeySecretName" -}}
{{- if .Values.inference.apiKey.existingSecret }}
{{- .Values.inference.apiKey.existingSecret }}
{{- else if .Values.inference.apiKey.value }}
{{- include "streamproc.componentName" (list . "inference") }}
{{- end }}
{{- end }}

{{- define "streamproc.hfTokenSecretName" -}}
{{- if .Values.vllm.hfToken.existingSecret }}
{{- .Values.vllm.hfToken.existingSecret }}
{{- else if .Values.vllm.hfToken.value }}
{{- include "streamproc.componentName" (list . "hf-token") }}
{{- end }}
{{- end }}

{{/* Extra items of one kind (extraEnv, extraEnvFrom, extraVolumes, extraVolumeMounts) for a
streamproc pod, (list $ COMPONENT-VALUES KEY): Kafka's (kafka.extraEnv, kafka.extraEnvFrom:
every Kafka client needs them), then the top-level ones, then the component's, so that on a
repeated variable name the component's wins. A YAML list, or nothing. The one place that says
which values reach the worker, quality and topic Job pods; the vLLM pods take only their own. */}}
{{- define "streamproc.extras" -}}
{{- $root := index . 0 }}{{ $v := index . 1 }}{{ $key := index . 2 }}
{{- $items := concat (index $root.Values.kafka $key | default list) (index $root.Values $key | default list) (index $v $key | default list) }}
{{- with $items }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* The environment of a streamproc container, (list $ COMPONENT-VALUES SERVICE). A service
(worker, quality) reads its settings from the config ConfigMap and gets the model server's API
key; the topic hook Job runs before that ConfigMap exists and calls no model server, so it gets
the extras only. */}}
{{- define "streamproc.env" -}}
{{- $root := index . 0 }}{{ $v := index . 1 }}{{ $service := index . 2 }}
{{- $envFrom := list }}{{ $env := list }}
{{- if $service }}
{{- $envFrom = append $envFrom (dict "configMapRef" (dict "name" (include "streamproc.componentName" (list $root "config")))) }}
{{- with (include "streamproc.apiKeySecretName" $root) }}
{{- $env = append $env (dict "name" "STREAMPROC_INFERENCE__API_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $root.Values.inference.apiKey.existingSecretKey))) }}
{{- end }}
{{- end }}
{{- $envFrom = concat $envFrom (include "streamproc.extras" (list $root $v "extraEnvFrom") | fromYamlArray) }}
{{- $env = concat $env (include "streamproc.extras" (list $root $v "extraEnv") | fromYamlArray) }}
{{- $out := dict }}
{{- with $envFrom }}{{ $_ := set $out "envFrom" . }}{{ end }}
{{- with $env }}{{ $_ := set $out "env" . }}{{ end }}
{{- with $out }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* A resource quantity times a count: (list "500m" 2) is "1000m", (list "1Gi" 3) is "3Gi". */}}
{{- define "streamproc.scaledQuantity" -}}
{{- $quantity := toString (index . 0) }}
{{- $number := regexFind "^[0-9]*[.]?[0-9]+" $quantity }}
{{- printf "%v%s" (round (mulf (float64 $number) (index . 1)) 3) (trimPrefix $number $quantity) }}
{{- end }}

{{/* Pod-level security for the streamproc image (uid 10001, see the Dockerfile). */}}
{{- define "streamproc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "streamproc.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Hash of the rendered config so that a change rolls the pods (env is read only at start). */}}
{{- define "streamproc.configChecksum" -}}
{{- include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{- define "streamproc.policiesChecksum" -}}
{{- include (print .Template.BasePath "/policies-configmap.yaml") . | sha256sum }}
{{- end }}

{{- /* The egress rules of a model server's NetworkPolicy, as YAML: the DNS rule, then the
server's networkPolicy.egress with every cloud metadata address excepted from each ipBlock that
contains it. A rule without `to` would allow every destination, and an ipBlock that is only a
metadata address cannot except it: both fail the render. IPv4 blocks are checked; IPv6 blocks
are rendered as given. Called with (dict "at" VALUES-PATH "rules" RULES "dns" DNS-RULE). */ -}}
{{- define "streamproc.modelServerEgress" -}}
{{- $at := .at }}
{{- $metadata := list "169.254.169.254" "100.100.100.200" }}
{{- $rules := list .dns }}
{{- range $i, $rule := .rules }}
{{- if not $rule.to }}
{{- fail (printf "%s.networkPolicy.egress[%d] has no `to`, so it allows every destination, cloud metadata (169.254.169.254) included: name its destinations (ipBlock, podSelector, namespaceSelector)" $at $i) }}
{{- end }}
{{- $peers := list }}
{{- range $peer := $rule.to }}
{{- if $peer.ipBlock }}
{{- $block := deepCopy $peer.ipBlock }}
{{- if not (contains ":" (toString $block.cidr)) }}
{{- $except := $block.except | default list }}
{{- range $address := $metadata }}
{{- if include "streamproc.ipv4Contains" (list $block.cidr $address $at) }}
{{- if hasSuffix "/32" $block.cidr }}
{{- fail (printf "%s.networkPolicy.egress[%d] allows %s, a cloud metadata address: the model servers never reach it" $at $i $block.cidr) }}
{{- end }}
{{- $covered := false }}
{{- range $except }}{{ if include "streamproc.ipv4Contains" (list . $address $at) }}{{ $covered = true }}{{ end }}{{ end }}
{{- if not $covered }}{{ $except = append $except (printf "%s/32" $address) }}{{ end }}
{{- end }}
{{- end }}
{{- with $except }}{{ $_ := set $block "except" . }}{{ end }}
{{- end }}
{{- $peers = append $peers (merge (dict "ipBlock" $block) (omit $peer "ipBlock")) }}
{{- else }}
{{- $peers = append $peers $peer }}
{{- end }}
{{- end }}
{{- $rules = append $rules (merge (dict "to" $peers) (omit $rule "to")) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{- /* "true" when the IPv4 CIDR (list CIDR ADDRESS VALUES-PATH) contains the address, else empty. */ -}}
{{- define "streamproc.ipv4Contains" -}}
{{- $cidr := toString (index . 0) }}{{ $address := index . 1 }}
{{- if not (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/([0-9]|[12][0-9]|3[0-2])$" $cidr) }}
{{- fail (printf "%s.networkPolicy.egress: %q is not an IPv4 or IPv6 CIDR" (index . 2) $cidr) }}
{{- end }}
{{- $parts := splitList "/" $cidr }}
{{- $size := 1 }}
{{- range until (sub 32 (atoi (index $parts 1)) | int) }}{{ $size = mul $size 2 }}{{ end }}
{{- if eq (div (include "streamproc.ipv4Number" (index $parts 0) | atoi) $size) (div (include "streamproc.ipv4Number" $address | atoi) $size) }}true{{ end }}
{{- end }}

{{- /* An IPv4 address as a number. */ -}}
{{- define "streamproc.ipv4Number" -}}
{{- $octets := splitList "." . }}
{{- add (mul (atoi (index $octets 0)) 16777216) (mul (atoi (index $octets 1)) 65536) (mul (atoi (index $octets 2)) 256) (atoi (index $octets 3)) }}
{{- end }}
