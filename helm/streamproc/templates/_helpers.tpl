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

{{/* The environment of a streamproc container, (list $ COMPONENT-VALUES KIND). A "service"
(worker, quality) reads its settings from the config ConfigMap and gets the model server's API
key; the "test" pod (helm test) the same settings without the key, since it calls no model
server. The topic hook "job" runs before that ConfigMap exists and calls no model server: it
gets the Kafka settings (STREAMPROC_KAFKA__*, config.env's among them) as variables of its own,
which the extras override as they override the ConfigMap in the services. */}}
{{- define "streamproc.env" -}}
{{- $root := index . 0 }}{{ $v := index . 1 }}{{ $kind := index . 2 }}
{{- $envFrom := list }}{{ $env := list }}
{{- $extraEnv := include "streamproc.extras" (list $root $v "extraEnv") | fromYamlArray }}
{{- if ne $kind "job" }}
{{- $envFrom = append $envFrom (dict "configMapRef" (dict "name" (include "streamproc.componentName" (list $root "config")))) }}
{{- end }}
{{- if eq $kind "service" }}
{{- with (include "streamproc.apiKeySecretName" $root) }}
{{- $key := dict "secretKeyRef" (dict "name" . "key" $root.Values.inference.apiKey.existingSecretKey) }}
{{- $env = append $env (dict "name" "STREAMPROC_INFERENCE__API_KEY" "valueFrom" $key) }}
{{- if $root.Values.embedding.enabled }}{{/* the chart's embedding server wants the same key */}}
{{- $env = append $env (dict "name" "STREAMPROC_EMBEDDING__API_KEY" "valueFrom" $key) }}
{{- end }}
{{- end }}
{{- else if eq $kind "job" }}
{{- $overridden := list }}{{ range $extraEnv }}{{ $overridden = append $overridden .name }}{{ end }}
{{- range $name, $value := include "streamproc.settings" $root | fromYaml }}
{{- if and (hasPrefix "STREAMPROC_KAFKA__" $name) (not (has $name $overridden)) }}
{{- $env = append $env (dict "name" $name "value" $value) }}
{{- end }}
{{- end }}
{{- with include "streamproc.jobConfigFile" $root }}
{{- $env = append $env (dict "name" "STREAMPROC_CONFIG_FILE" "value" "/etc/streamproc/config/streamproc.yaml") }}
{{- end }}
{{- end }}
{{- $envFrom = concat $envFrom (include "streamproc.extras" (list $root $v "extraEnvFrom") | fromYamlArray) }}
{{- $env = concat $env $extraEnv }}
{{- $out := dict }}
{{- with $envFrom }}{{ $_ := set $out "envFrom" . }}{{ end }}
{{- with $env }}{{ $_ := set $out "env" . }}{{ end }}
{{- with $out }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* The services' settings as a YAML map of STREAMPROC_* variables: config.env, with the chart's
own over it (their values are wired to ports, mounts and services elsewhere in the chart). The
config ConfigMap holds them all; the topic hook Job gets the Kafka ones (streamproc.env). */}}
{{- define "streamproc.settings" -}}
{{- $env := dict }}
{{- range $name, $value := .Values.config.env }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- $chart := dict
  "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS" .Values.kafka.bootstrapServers
  "STREAMPROC_KAFKA__GROUP_ID" .Values.kafka.groupId
  "STREAMPROC_TOPICS__LISTINGS" .Values.topics.listings
  "STREAMPROC_TOPICS__VIDEOS" .Values.topics.videos
  "STREAMPROC_INFERENCE__BASE_URL" (include "streamproc.inferenceBaseUrl" .)
  "STREAMPROC_INFERENCE__MODEL" (include "streamproc.inferenceModel" .)
  "STREAMPROC_POLICY__PATHS" (toJson (list "/etc/streamproc/policies"))
  "STREAMPROC_METRICS__ENABLED" "true"
  "STREAMPROC_METRICS__PORT" (toString .Values.worker.service.metricsPort)
  "STREAMPROC_WORKER__PROCESSES" (toString .Values.worker.processes)
  "STREAMPROC_QUALITY__METRICS_PORT" (toString .Values.quality.service.metricsPort)
  "STREAMPROC_QUALITY__DATA_DIR" .Values.quality.persistence.mountPath
}}
{{- if .Values.config.file }}
{{- $_ := set $chart "STREAMPROC_CONFIG_FILE" "/etc/streamproc/config/streamproc.yaml" }}
{{- end }}
{{- if .Values.embedding.enabled }}
{{- $_ := set $chart "STREAMPROC_EMBEDDING__BASE_URL" (include "streamproc.embeddingBaseUrl" .) }}
{{- $_ := set $chart "STREAMPROC_EMBEDDING__MODEL" .Values.embedding.servedModelName }}
{{- end }}
{{- toYaml (mergeOverwrite $env $chart) }}
{{- end }}

{{/* The settings file of the topic hook Job: config.file's kafka section (the Job reads only
the Kafka settings, and validating the rest could fail on files mounted in the services only),
as YAML; empty when config.file has none. */}}
{{- define "streamproc.jobConfigFile" -}}
{{- with .Values.config.file }}{{ with .kafka }}{{ toYaml (dict "kafka" .) }}{{ end }}{{ end }}
{{- end }}

{{/* A resource quantity times a count: (list "500m" 2) is "1000m", (list "1Gi" 3) is "3Gi". */}}
{{- define "streamproc.scaledQuantity" -}}
{{- $quantity := toString (index . 0) }}
{{- $number := regexFind "^[0-9]*[.]?[0-9]+" $quantity }}
{{- printf "%v%s" (round (mulf (float64 $number) (index . 1)) 3) (trimPrefix $number $quantity) }}
{{- end }}

{{/* Pod-level security of the streamproc pods: podSecurityContext (uid 10001 by default, the
image's user; none where OpenShift assigns one), never root whatever the values say. */}}
{{- define "streamproc.podSecurityContext" -}}
{{- toYaml (merge (dict "runAsNonRoot" true) (deepCopy .Values.podSecurityContext)) }}
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

{{- /* The kafka scaler's TLS and SASL, from the workers' Kafka settings as the values state
them (config.env, the chart's settings, then kafka.extraEnv, extraEnv and worker.extraEnv, as
the worker container gets them), as YAML: {metadata: the trigger's tls and sasl, env: values
KEDA resolves from the worker container (user name, password, key password), secretTargetRef:
the Secrets behind the PEM files}; nothing for PLAINTEXT. The protocol and the SASL mechanism
must be plain values: a Secret's content is not known when rendering. */ -}}
{{- define "streamproc.kedaKafkaAuth" -}}
{{- $root := . }}
{{- $known := include "streamproc.settings" . | fromYaml }}{{ $set := deepCopy $known }}
{{- range include "streamproc.extras" (list . .Values.worker "extraEnv") | fromYamlArray }}
{{- $_ := set $set .name true }}
{{- if hasKey . "value" }}{{ $_ := set $known .name (toString .value) }}{{ else }}{{ $_ := unset $known .name }}{{ end }}
{{- end }}
{{- range $setting := list "SECURITY_PROTOCOL" "SASL_MECHANISM" }}
{{- $name := printf "STREAMPROC_KAFKA__%s" $setting }}
{{- if and (hasKey $set $name) (not (hasKey $known $name)) }}
{{- fail (printf "%s comes from a Secret or a ConfigMap key, so the chart cannot give KEDA's kafka scaler the same TLS/SASL settings: set it as a plain value (kafka.extraEnv or config.env), or name a TriggerAuthentication of your own in keda.worker.authenticationRef" $name) }}
{{- end }}
{{- end }}
{{- $protocol := get $known "STREAMPROC_KAFKA__SECURITY_PROTOCOL" | default "PLAINTEXT" }}
{{- if ne $protocol "PLAINTEXT" }}
{{- $metadata := dict }}{{ $env := list }}{{ $secrets := list }}
{{- if hasSuffix "SSL" $protocol }}
{{- $_ := set $metadata "tls" "enable" }}
{{- range $parameter, $setting := dict "ca" "SSL_CA_FILE" "cert" "SSL_CERT_FILE" "key" "SSL_KEY_FILE" }}
{{- $name := printf "STREAMPROC_KAFKA__%s" $setting }}
{{- with get $known $name }}
{{- $secret := include "streamproc.mountedSecretKey" (list $root . $name) | fromYaml }}
{{- $secrets = append $secrets (dict "parameter" $parameter "name" $secret.name "key" $secret.key) }}
{{- end }}
{{- end }}
{{- if hasKey $set "STREAMPROC_KAFKA__SSL_KEY_PASSWORD" }}
{{- $env = append $env (dict "parameter" "keyPassword" "name" "STREAMPROC_KAFKA__SSL_KEY_PASSWORD" "containerName" "worker") }}
{{- end }}
{{- end }}
{{- if hasPrefix "SASL_" $protocol }}
{{- $mechanism := get $known "STREAMPROC_KAFKA__SASL_MECHANISM" }}
{{- $sasl := get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") $mechanism }}
{{- if not $sasl }}
{{- fail (printf "STREAMPROC_KAFKA__SECURITY_PROTOCOL is %s but STREAMPROC_KAFKA__SASL_MECHANISM is %q: set PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 as a plain value (kafka.extraEnv), for the workers and KEDA's kafka scaler alike, or name a TriggerAuthentication of your own in keda.worker.authenticationRef" $protocol $mechanism) }}
{{- end }}
{{- $_ := set $metadata "sasl" $sasl }}
{{- $env = concat (list (dict "parameter" "username" "name" "STREAMPROC_KAFKA__SASL_USERNAME" "containerName" "worker") (dict "parameter" "password" "name" "STREAMPROC_KAFKA__SASL_PASSWORD" "containerName" "worker")) $env }}
{{- end }}
{{- toYaml (dict "metadata" $metadata "env" $env "secretTargetRef" $secrets) }}
{{- end }}
{{- end }}

{{- /* The Secret and key a worker file is mounted from, (list $ PATH SETTING), as YAML {name,
key}: the deepest of the workers' extra volume mounts that holds PATH, whose volume must be a
Secret (KEDA reads PEM files from Secrets only). */ -}}
{{- define "streamproc.mountedSecretKey" -}}
{{- $root := index . 0 }}{{ $path := index . 1 }}{{ $setting := index . 2 }}
{{- $volumes := include "streamproc.extras" (list $root $root.Values.worker "extraVolumes") | fromYamlArray }}
{{- $best := dict "depth" -1 }}
{{- range include "streamproc.extras" (list $root $root.Values.worker "extraVolumeMounts") | fromYamlArray }}
{{- $mountPath := trimSuffix "/" .mountPath }}{{ $relative := "" }}
{{- if .subPath }}{{ if eq $mountPath $path }}{{ $relative = .subPath }}{{ end }}
{{- else if hasPrefix (printf "%s/" $mountPath) $path }}{{ $relative = trimPrefix (printf "%s/" $mountPath) $path }}{{ end }}
{{- if and $relative (gt (len $mountPath) (int $best.depth)) }}{{ $best = dict "depth" (len $mountPath) "volume" .name "relative" $relative }}{{ end }}
{{- end }}
{{- if not $best.volume }}
{{- fail (printf "%s (%s) is on no volume of the workers' extraVolumeMounts, so KEDA's kafka scaler cannot be given the same file: mount it from a Secret (extraVolumes), or name a TriggerAuthentication of your own in keda.worker.authenticationRef" $setting $path) }}
{{- end }}
{{- $found := dict }}
{{- range $volumes }}
{{- if eq .name $best.volume }}
{{- if not .secret }}
{{- fail (printf "%s (%s) is on volume %s, which is not a Secret: KEDA's kafka scaler takes PEM files from Secrets only; mount it from a Secret, or name a TriggerAuthentication of your own in keda.worker.authenticationRef" $setting $path .name) }}
{{- end }}
{{- $key := $best.relative }}
{{- range .secret.items | default list }}{{ if eq .path $best.relative }}{{ $key = .key }}{{ end }}{{ end }}
{{- $found = dict "name" .secret.secretName "key" $key }}
{{- end }}
{{- end }}
{{- if not $found.name }}
{{- fail (printf "%s (%s): no volume %s among the workers' extraVolumes" $setting $path $best.volume) }}
{{- end }}
{{- toYaml $found }}
{{- end }}
