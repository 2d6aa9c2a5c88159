{{/*
One Job of the chart, for one node or for none. Pass a dict:
  root  the chart context
  node  the node name (empty: one Job, not pinned to a node)
  host  the node's kubernetes.io/hostname label value
  prune true for the post-delete prune Job, false for the import Job
*/}}
{{- define "offline-images.job" -}}
{{- $root := .root }}
{{- $ip := $root.Values.imagePull }}
{{- $vol := $ip.imagesVolume }}
{{- $node := .node }}
{{- $prune := .prune }}
{{- $component := ternary "image-prune" "image-import" $prune }}
{{- $base := ternary (include "offline-images.pruneName" $root) (include "offline-images.importName" $root) $prune }}
{{- $name := include "offline-images.nodeJobName" (dict "base" $base "node" $node) }}
{{- $hookArgs := dict "root" $root "offset" 0 }}
{{- if $prune }}
{{- $hookArgs = dict "root" $root "offset" 0 "hook" "post-delete" "deletePolicy" $ip.prune.deletePolicy }}
{{- end }}
{{- $labels := include "offline-images.labels" $root | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" $component }}
{{- $needBundle := or (not $prune) $ip.bootstrap.enabled }}
{{- $nodeSelector := $ip.nodeSelector | default dict }}
{{- if $node }}
{{- $nodeSelector = merge (dict "kubernetes.io/hostname" .host) $nodeSelector }}
{{- end }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- toYaml $labels | nindent 4 }}
  annotations:
    {{- include "offline-images.hookAnnotations" $hookArgs | nindent 4 }}
    {{- with $node }}
    offline-images.io/node: {{ . | quote }}
    {{- end }}
spec:
  backoffLimit: {{ int $ip.backoffLimit }}
  activeDeadlineSeconds: {{ int64 $ip.activeDeadlineSeconds }}
  {{- if not (kindIs "invalid" $ip.ttlSecondsAfterFinished) }}
  ttlSecondsAfterFinished: {{ int $ip.ttlSecondsAfterFinished }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- /* The chart's labels win over podLabels: the review selector and prune rely on them. */}}
        {{- merge (deepCopy $labels) ($ip.podLabels | default dict) | toYaml | nindent 8 }}
      {{- $podAnnotations := $ip.podAnnotations | default dict }}
      {{- with $node }}
      {{- $podAnnotations = merge (dict "offline-images.io/node" .) $podAnnotations }}
      {{- end }}
      {{- with $podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "offline-images.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $ip.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $ip.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $ip.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $ip.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: importer
          image: {{ include "offline-images.jobImage" $root | quote }}
          {{- if $ip.bootstrap.enabled }}
          imagePullPolicy: {{ $ip.bootstrap.pullPolicy }}
          # The importer binary the bundle carries (written by `offline-images export`); it
          # checks itself against .offline-images/offline-images.sha256 before it runs.
          command: [{{ include "offline-images.bootstrapBinary" $root | quote }}]
          {{- else }}
          imagePullPolicy: {{ $ip.importerImage.pullPolicy }}
          command: ["/offline-images"]
          {{- end }}
          args:
            {{- if $prune }}
            - prune
            {{- if $ip.prune.dryRun }}
            - --dry-run
            {{- end }}
            {{- else }}
            - import
            - --jobs={{ int $ip.jobs }}
            {{- if $ip.strict }}
            - --strict
            {{- end }}
            {{- range $ip.extraArgs }}
            - {{ . | quote }}
            {{- end }}
            {{- end }}
          env:
            {{- if not $prune }}
            - name: IMAGES_PATH
              value: /images
            {{- end }}
            # Images are labelled with the release, so `prune` removes exactly its images.
            - name: RELEASE_NAME
              value: {{ $root.Release.Name | quote }}
            - name: HOST_ROOT
              value: /host
            - name: IMAGE_RUNTIME
              value: {{ $ip.runtime | quote }}
            {{- with $ip.containerdAddress }}
            - name: CONTAINERD_ADDRESS
              value: {{ . | quote }}
            {{- end }}
            - name: CONTAINERD_NAMESPACE
              value: {{ $ip.containerdNamespace | quote }}
            {{- with $ip.dockerHost }}
            - name: DOCKER_HOST
              value: {{ . | quote }}
            {{- end }}
            - name: LOG_FORMAT
              value: {{ $ip.logFormat | quote }}
            {{- with $ip.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # When the importer fails without a termination message, the end of its log
          # (the summary) is shown by `kubectl describe pod`.
          terminationMessagePolicy: FallbackToLogsOnError
          volumeMounts:
            {{- if $needBundle }}
            - name: images
              mountPath: /images
              readOnly: true
              {{- with $vol.subPath }}
              subPath: {{ . | quote }}
              {{- end }}
            {{- end }}
            - name: host-root
              mountPath: /host
              readOnly: true
            - name: tmp
              mountPath: /tmp
          {{- with $ip.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $ip.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      volumes:
        {{- if $needBundle }}
        # The bundle, read-only.
        - name: images
          {{- if eq $vol.type "nfs" }}
          nfs:
            server: {{ required "imagePull.imagesVolume.nfs.server is required when imagePull.imagesVolume.type is nfs" $vol.nfs.server | quote }}
            path: {{ required "imagePull.imagesVolume.nfs.path is required when imagePull.imagesVolume.type is nfs" $vol.nfs.path | quote }}
            readOnly: true
          {{- else if eq $vol.type "persistentVolumeClaim" }}
          persistentVolumeClaim:
            claimName: {{ required "imagePull.imagesVolume.persistentVolumeClaim.claimName is required when imagePull.imagesVolume.type is persistentVolumeClaim" $vol.persistentVolumeClaim.claimName | quote }}
            readOnly: true
          {{- else }}
          hostPath:
            path: {{ required "imagePull.imagesPath is required" $ip.imagesPath | quote }}
            type: Directory
          {{- end }}
        {{- end }}
        # The node's root filesystem, read-only: the runtime sockets and the node's `ctr`
        # are found there.
        - name: host-root
          hostPath:
            path: /
            type: Directory
        # Scratch space; the container's own root filesystem is read-only.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end -}}
