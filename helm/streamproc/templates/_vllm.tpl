{{- /* A vLLM server: Deployment, Service and (when its model cache is a claim of its own) the
claim. Called with (dict "root" . "component" NAME "v" VALUES "args" EXTRA-ARGS "backbone" BOOL):
the generative server (vllm.yaml) and the embedding server (embedding.yaml), whose init
container first cuts its backbone out of embedding.sourceModel. */ -}}
{{- define "streamproc.vllmServer" -}}
{{- $root := .root }}{{ $component := .component }}{{ $v := .v }}
{{- $name := include "streamproc.componentName" (list $root $component) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "streamproc.componentLabels" (list $root $component) | nindent 4 }}
spec:
  {{- if not (and (eq $component "vllm") $root.Values.keda.enabled $root.Values.keda.vllm.enabled) }}
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
      containers:
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
            {{- range $v.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            - name: HF_HOME
              value: {{ $v.modelCache.mountPath | quote }}
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
