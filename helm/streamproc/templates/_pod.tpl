{{/* Pod spec parts shared by the worker and the quality service: (list $ "worker" .Values.worker). */}}
{{- define "streamproc.servicePod" -}}
{{- $root := index . 0 }}{{ $component := index . 1 }}{{ $v := index . 2 }}
metadata:
  labels:
    {{- include "streamproc.componentSelectorLabels" (list $root $component) | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "streamproc.configChecksum" $root }}
    {{- if or (eq $component "quality") $root.Values.policies.restartWorkersOnChange }}
    checksum/policies: {{ include "streamproc.policiesChecksum" $root }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "streamproc.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  securityContext:
    {{- include "streamproc.podSecurityContext" $root | nindent 4 }}
  containers:
    - name: {{ $component }}
      image: {{ include "streamproc.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: [{{ $component }}]
      ports:
        - name: metrics
          containerPort: {{ $v.service.metricsPort }}
          protocol: TCP
      {{- include "streamproc.env" (list $root $v "service") | nindent 6 }}
      livenessProbe:
        {{- toYaml $v.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml $v.readinessProbe | nindent 8 }}
      startupProbe:
        {{- toYaml $v.startupProbe | nindent 8 }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- include "streamproc.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: policies
          mountPath: /etc/streamproc/policies
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if $root.Values.config.file }}
        - name: config-file
          mountPath: /etc/streamproc/config
          readOnly: true
        {{- end }}
        {{- if eq $component "quality" }}
        - name: data
          mountPath: {{ $root.Values.quality.persistence.mountPath }}
        {{- end }}
        {{- with include "streamproc.extras" (list $root $v "extraVolumeMounts") }}
        {{- . | nindent 8 }}
        {{- end }}
  volumes:
    - name: policies
      configMap:
        name: {{ $root.Values.policies.existingConfigMap | default (include "streamproc.componentName" (list $root "policies")) }}
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    {{- if $root.Values.config.file }}
    - name: config-file
      configMap:
        name: {{ include "streamproc.componentName" (list $root "config-file") }}
    {{- end }}
    {{- if eq $component "quality" }}
    - name: data
      {{- if $root.Values.quality.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ $root.Values.quality.persistence.existingClaim | default (include "streamproc.componentName" (list $root "quality")) }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- with include "streamproc.extras" (list $root $v "extraVolumes") }}
    {{- . | nindent 4 }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    - {{- toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (include "streamproc.componentSelectorLabels" (list $root $component) | fromYaml)))) | nindent 6 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The headless Service behind a component's ServiceMonitor: (list $ "worker" port). */}}
{{- define "streamproc.metricsService" -}}
{{- $root := index . 0 }}{{ $component := index . 1 }}{{ $port := index . 2 }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "streamproc.componentName" (list $root $component) }}
  labels:
    {{- include "streamproc.componentLabels" (list $root $component) | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "streamproc.componentSelectorLabels" (list $root $component) | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $port }}
      targetPort: metrics
      protocol: TCP
{{- end }}
