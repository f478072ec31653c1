{{- /* A vLLM server: Deployment, Service and (when its model cache is a claim of its own) the
claim. Called with (dict "root" . "component" NAME "v" VALUES "args" EXTRA-ARGS "backbone" BOOL):
the generative server (vllm.yaml) and the embedding server (embedding.yaml), whose init
container first cuts its backbone out of embedding.sourceModel. That init container downloads
the weights, so it gets the server's extraEnv, extraEnvFrom and extraVolumeMounts too (a
private hub mirror's address and CA). */ -}}
{{- define "streamproc.vllmServer" -}}
{{- $root := .root }}{{ $component := .component }}{{ $v := .v }}
{{- $name := include "streamproc.componentName" (list $root $component) }}
{{- include "streamproc.checkModelCache" . }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "streamproc.componentLabels" (list $root $component) | nindent 4 }}
spec:
  {{- if not (include "streamproc.kedaScales" (list $root $component)) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "streamproc.componentSelectorLabels" (list $root $component) | nindent 6 }}
  strategy:
    {{- toYaml $v.strategy | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "streamproc.componentSelectorLabels" (list $root $component) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- if .backbone }}
      initContainers:
        # vLLM cannot truncate a model on load: cut the first embedding.layers layers of
        # embedding.sourceModel into /models/backbone (the same image has torch and transformers).
        - name: backbone
          image: "{{ $v.image.repository }}:{{ $v.image.tag }}"
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: [python3, /scripts/prepare_model.py, backbone]
          args:
            - --source
            - {{ $root.Values.embedding.sourceModel | quote }}
            - --layers
            - {{ $root.Values.embedding.layers | quote }}
            - --out
            - /models/backbone
          env:
            - name: HF_HOME
              value: {{ $v.modelCache.mountPath | quote }}
            - name: HF_HUB_OFFLINE
              value: "0"
            {{- with (include "streamproc.hfTokenSecretName" $root) }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.hfToken.existingSecretKey }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $v.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            allowPrivilegeEscalation: false
          volumeMounts:
            - name: model-cache
              mountPath: {{ $v.modelCache.mountPath }}
            - name: backbone
              mountPath: /models
            - name: scripts
              mountPath: /scripts
              readOnly: true
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      {{- end }}
      containers:
        - name: vllm
          image: "{{ $v.image.repository }}:{{ $v.image.tag }}"
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            - --model
            - {{ ternary "/models/backbone" $v.model (.backbone | default false) | quote }}
            - --served-model-name
            - {{ $v.servedModelName | quote }}
            - --port
            - {{ $v.service.port | quote }}
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
            {{- /* A flag the chart derives from a value yields to the same flag in extraArgs. */}}
            {{- $extraArgs := $v.extraArgs | default list }}
            {{- /* The model's Hub revision (not the embedding server's: it serves a local cut).
            vLLM pins the model's own tokenizer to the same revision (tokenizer_revision
            defaults to revision), so --tokenizer-revision is left to extraArgs, for a
            --tokenizer from another repository. */}}
            {{- if and $v.revision (not .backbone) (not (include "streamproc.argGiven" (list $extraArgs "--revision"))) }}
            - --revision
            - {{ $v.revision | quote }}
            {{- end }}
            {{- /* One vLLM process over all of the pod's GPUs. */}}
            {{- if and (gt (int $v.gpus) 1) (not (include "streamproc.argGiven" (list $extraArgs "--tensor-parallel-size" "-tp"))) }}
            - --tensor-parallel-size
            - {{ $v.gpus | quote }}
            {{- end }}
            {{- with $v.allowedMediaDomains }}
            - --allowed-media-domains
            {{- range . }}
            - {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- range $v.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: HF_HOME
              value: {{ $v.modelCache.mountPath | quote }}
            - name: VLLM_MEDIA_URL_ALLOW_REDIRECTS
              value: {{ ternary "1" "0" $v.followMediaRedirects | quote }}
            {{- with (include "streamproc.hfTokenSecretName" $root) }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.hfToken.existingSecretKey }}
            {{- end }}
            {{- with (include "streamproc.apiKeySecretName" $root) }}
            - name: VLLM_API_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $root.Values.inference.apiKey.existingSecretKey }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $v.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ $v.service.port }}
              protocol: TCP
          startupProbe:
            {{- toYaml $v.startupProbe | nindent 12 }}
          livenessProbe:
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $v.readinessProbe | nindent 12 }}
          {{- $resources := deepCopy $v.resources }}
          {{- if gt (int $v.gpus) 0 }}
          {{- $gpu := dict $v.gpuResourceName (toString $v.gpus) }}
          {{- /* merge fills its first argument: a fresh copy each time, or the requests leak into the limits */}}
          {{- $_ := set $resources "requests" (merge (deepCopy $gpu) (get $resources "requests" | default dict)) }}
          {{- $_ := set $resources "limits" (merge (deepCopy $gpu) (get $resources "limits" | default dict)) }}
          {{- end }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
          volumeMounts:
            - name: model-cache
              mountPath: {{ $v.modelCache.mountPath }}
            - name: dshm
              mountPath: /dev/shm
            {{- if .backbone }}
            - name: backbone
              mountPath: /models
              readOnly: true
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: model-cache
          {{- if $v.modelCache.enabled }}
          persistentVolumeClaim:
            claimName: {{ $v.modelCache.existingClaim | default $name }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        - name: dshm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $v.shmSizeLimit }}
        {{- if .backbone }}
        - name: backbone
          emptyDir: {}
        - name: scripts
          configMap:
            name: {{ include "streamproc.componentName" (list $root "scripts") }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "streamproc.componentLabels" (list $root $component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "streamproc.componentSelectorLabels" (list $root $component) | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.service.port }}
      targetPort: http
      protocol: TCP
{{- if and $v.modelCache.enabled (not $v.modelCache.existingClaim) }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ $name }}
  labels:
    {{- include "streamproc.componentLabels" (list $root $component) | nindent 4 }}
  annotations:
    # Re-downloading weights is slow: the cache outlives `helm uninstall`.
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml $v.modelCache.accessModes | nindent 4 }}
  {{- with $v.modelCache.storageClassName }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $v.modelCache.size }}
{{- end }}
{{- end }}

{{- /* "true" when KEDA scales this server (keda.<component>), else empty. */ -}}
{{- define "streamproc.kedaScales" -}}
{{- $root := index . 0 }}{{ $component := index . 1 }}
{{- if and $root.Values.keda.enabled (index $root.Values.keda $component).enabled }}true{{ end }}
{{- end }}

{{- /* A model cache claim that only one node can mount (ReadWriteOnce, ReadWriteOncePod) must
never have two pods: a replica scheduled on another node hangs in Multi-Attach. Counts the
most replicas (KEDA's maximum or the fixed count), a rolling update's surge pod, and the other
server's pods when both name the same existing claim. Same arguments as streamproc.vllmServer. */ -}}
{{- define "streamproc.checkModelCache" -}}
{{- $root := .root }}{{ $component := .component }}{{ $v := .v }}
{{- $cache := $v.modelCache }}
{{- $at := ternary "vllm" "embedding.server" (eq $component "vllm") }}
{{- if and $cache.enabled (not (has "ReadWriteMany" $cache.accessModes)) }}
{{- $pods := int $v.replicas }}{{ $most := printf "%s.replicas" $at }}
{{- if include "streamproc.kedaScales" (list $root $component) }}
{{- $pods = int (index $root.Values.keda $component).maxReplicaCount }}{{ $most = printf "keda.%s.maxReplicaCount" $component }}
{{- end }}
{{- $why := list }}{{ $fixes := list }}
{{- if gt $pods 1 }}
{{- $why = append $why (printf "%s %d" $most $pods) }}{{ $fixes = append $fixes (printf "set %s to 1" $most) }}
{{- end }}
{{- $strategy := $v.strategy | default dict }}
{{- $surge := dig "rollingUpdate" "maxSurge" "25%" $strategy | toString }}
{{- if and (ne ($strategy.type | default "RollingUpdate") "Recreate") (not (has $surge (list "0" "0%"))) }}
{{- $pods = add1 $pods }}
{{- $why = append $why (printf "a rolling update's surge pod, %s.strategy" $at) }}{{ $fixes = append $fixes (printf "set %s.strategy.rollingUpdate.maxSurge to 0" $at) }}
{{- end }}
{{- if and (eq $component "embedding") $root.Values.vllm.enabled $root.Values.vllm.modelCache.enabled $cache.existingClaim (eq $cache.existingClaim $root.Values.vllm.modelCache.existingClaim) }}
{{- $pods = add1 $pods }}
{{- $why = append $why (printf "vllm's pods on the same claim %s" $cache.existingClaim) }}{{ $fixes = append $fixes (printf "give %s.modelCache a claim of its own" $at) }}
{{- end }}
{{- if gt $pods 1 }}
{{- fail (printf "%s.modelCache.accessModes %v let one node mount the claim, but more than one pod may mount it (%s) and one on another node hangs in Multi-Attach: set %s.modelCache.accessModes to [ReadWriteMany] (a storage class that has it), or %s.modelCache.enabled to false (an emptyDir per pod), or %s" $at $cache.accessModes (join "; " $why) $at $at (join " and " $fixes)) }}
{{- end }}
{{- end }}
{{- end }}

{{- /* "true" when an argument list (list ARGS NAME...) gives one of the named flags, as
`--flag value` or `--flag=value`; vLLM's parser reads `_` in a long flag's name as `-`. */ -}}
{{- define "streamproc.argGiven" -}}
{{- $args := index . 0 }}{{ $names := rest . }}
{{- range $args }}
{{- $flag := splitList "=" (toString .) | first }}
{{- if hasPrefix "--" $flag }}{{ $flag = replace "_" "-" $flag }}{{ end }}
{{- if has $flag $names }}true{{ end }}
{{- end }}
{{- end }}
