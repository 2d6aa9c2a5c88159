{{/*
How the import pod reaches the node's runtime:
  nodeRoot  the node's root filesystem, read-only at /host: the runtime sockets are probed
            there and the node's `ctr` runs chrooted into it (the default containerd client);
  socket    only the runtime's socket, at /host<path>: Docker (the Engine API needs nothing
            else) and containerd with containerdClient native (the gRPC API on the socket).
*/}}
{{- define "offline-images.hostAccess" -}}
{{- $ip := .Values.imagePull -}}
{{- if or (eq $ip.runtime "docker") (eq $ip.containerdClient "native") -}}
socket
{{- else -}}
nodeRoot
{{- end -}}
{{- end -}}

{{/* "true" when the Job reaches containerd through its gRPC API (containerdClient native). */}}
{{- define "offline-images.nativeContainerd" -}}
{{- $ip := .Values.imagePull -}}
{{- if and (eq $ip.containerdClient "native") (ne $ip.runtime "docker") -}}
true
{{- end -}}
{{- end -}}

{{/* The node path of the runtime socket mounted in socket mode. */}}
{{- define "offline-images.socketPath" -}}
{{- $ip := .Values.imagePull -}}
{{- if eq $ip.runtime "docker" -}}
{{- $ip.dockerHost | default "unix:///var/run/docker.sock" | trimPrefix "unix://" -}}
{{- else -}}
{{- $ip.containerdAddress | default "/run/containerd/containerd.sock" -}}
{{- end -}}
{{- end -}}

{{/*
The pod's node affinity: imagePull.affinity, and for a Job pinned to one node, a
`matchFields` term on `metadata.name` added to every required term (ANDed with it), so the pod
can only run on that node.
*/}}
{{- define "offline-images.affinity" -}}
{{- $affinity := deepCopy (.root.Values.imagePull.affinity | default dict) -}}
{{- if .node -}}
{{- $na := get $affinity "nodeAffinity" | default dict -}}
{{- $required := get $na "requiredDuringSchedulingIgnoredDuringExecution" | default dict -}}
{{- $pin := dict "key" "metadata.name" "operator" "In" "values" (list .node) -}}
{{- $terms := list -}}
{{- range $term := get $required "nodeSelectorTerms" | default (list dict) -}}
{{- $terms = append $terms (set (deepCopy $term) "matchFields" (append (get $term "matchFields" | default list) $pin)) -}}
{{- end -}}
{{- $_ := set $required "nodeSelectorTerms" $terms -}}
{{- $_ = set $na "requiredDuringSchedulingIgnoredDuringExecution" $required -}}
{{- $_ = set $affinity "nodeAffinity" $na -}}
{{- end -}}
{{- with $affinity -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* The container security context; in socket mode without SYS_CHROOT, which only the node's
chrooted `ctr` needs. */}}
{{- define "offline-images.securityContext" -}}
{{- $sc := deepCopy (.Values.imagePull.securityContext | default dict) -}}
{{- if and (eq (include "offline-images.hostAccess" .) "socket") (hasKey $sc "capabilities") -}}
{{- $caps := get $sc "capabilities" -}}
{{- $add := without (get $caps "add" | default list) "SYS_CHROOT" -}}
{{- if $add -}}
{{- $_ := set $caps "add" $add -}}
{{- else -}}
{{- $_ := unset $caps "add" -}}
{{- end -}}
{{- end -}}
{{- with $sc -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/* recursiveReadOnly of a read-only hostPath directory mount, where the cluster has the field. */}}
{{- define "offline-images.recursiveReadOnly" -}}
{{- with .Values.imagePull.recursiveReadOnly -}}
{{- if semverCompare ">=1.30-0" $.Capabilities.KubeVersion.Version -}}
recursiveReadOnly: {{ . }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* activeDeadlineSeconds: the value, or sized to the bundle: 120 s plus 30 s per GiB. */}}
{{- define "offline-images.deadline" -}}
{{- $ip := .Values.imagePull -}}
{{- if kindIs "invalid" $ip.activeDeadlineSeconds -}}
{{- add 120 (mul 30 (int $ip.bundleGiB)) -}}
{{- else -}}
{{- int64 $ip.activeDeadlineSeconds -}}
{{- end -}}
{{- end -}}

{{/* The importer's --lock-timeout: the value, or half the import Job's deadline, so that an
importer that waited for another on its node still has the other half to import. */}}
{{- define "offline-images.lockTimeout" -}}
{{- $ip := .Values.imagePull -}}
{{- if kindIs "invalid" $ip.lockTimeoutSeconds -}}
{{- div (include "offline-images.deadline" . | int64) 2 -}}
{{- else -}}
{{- int64 $ip.lockTimeoutSeconds -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets: global.imagePullSecrets, then imagePull.imagePullSecrets; each a name or
{name: ...}. */}}
{{- define "offline-images.pullSecrets" -}}
{{- $global := dig "global" "imagePullSecrets" (list) (.Values | merge dict) -}}
{{- range concat $global (.Values.imagePull.imagePullSecrets | default list) }}
{{- $name := . }}
{{- if kindIs "map" . }}
{{- $name = get . "name" }}
{{- end }}
- name: {{ $name | quote }}
{{- end -}}
{{- end -}}

{{/* The importer's arguments. */}}
{{- define "offline-images.args" -}}
{{- $ip := .root.Values.imagePull -}}
{{- if .prune }}
- prune
{{- if $ip.prune.dryRun }}
- --dry-run
{{- end }}
{{- if $ip.prune.waitSeconds }}
- --wait-for-containers={{ int $ip.prune.waitSeconds }}
{{- end }}
{{- else }}
- import
{{- if $ip.jobs }}
- --jobs={{ int $ip.jobs }}
{{- end }}
{{- if $ip.strict }}
- --strict
{{- end }}
{{- range $ip.requiredImages }}
- {{ printf "--require=%s" . | quote }}
{{- end }}
{{- range $ip.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
One Job of the chart, for one node or for none. Pass a dict:
  root    the chart context
  node    the node name (empty: one Job, not pinned to a node)
  prune   true for the post-delete prune Job, false for the import Job
  skipped the nodes left out, with the reason ("<node>: <why>"), named in the import log
*/}}
{{- define "offline-images.job" -}}
{{- $root := .root }}
{{- $ip := $root.Values.imagePull }}
{{- $vol := $ip.imagesVolume }}
{{- $node := .node }}
{{- $prune := .prune }}
{{- $access := include "offline-images.hostAccess" $root }}
{{- $component := ternary "image-prune" "image-import" $prune }}
{{- $base := ternary (include "offline-images.pruneName" $root) (include "offline-images.importName" $root) $prune }}
{{- $name := include "offline-images.nodeJobName" (dict "base" $base "node" $node) }}
{{- $hookArgs := dict "root" $root "offset" 0 "outputLogs" (not $node) "importJob" true }}
{{- if $prune }}
{{- $hookArgs = dict "root" $root "offset" 0 "hook" "post-delete" "deletePolicy" $ip.prune.deletePolicy "outputLogs" (not $node) }}
{{- end }}
{{- $labels := include "offline-images.labels" $root | fromYaml }}
{{- $_ := set $labels "app.kubernetes.io/component" $component }}
{{- $needBundle := or (not $prune) $ip.bootstrap.enabled }}
{{- $rro := include "offline-images.recursiveReadOnly" $root }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- toYaml $labels | nindent 4 }}
  annotations:
    {{- include "offline-images.hookAnnotations" $hookArgs | nindent 4 }}
    {{- with $node }}
    offline-images.io/node: {{ . | quote }}
    {{- end }}
spec:
  backoffLimit: {{ int $ip.backoffLimit }}
  {{- $deadline := include "offline-images.deadline" $root | int64 }}
  {{- if $prune }}
  {{- /* prune first waits up to prune.waitSeconds for the release's containers to go. */}}
  {{- $deadline = add $deadline (int $ip.prune.waitSeconds) }}
  {{- end }}
  activeDeadlineSeconds: {{ $deadline }}
  {{- if not (kindIs "invalid" $ip.ttlSecondsAfterFinished) }}
  ttlSecondsAfterFinished: {{ int $ip.ttlSecondsAfterFinished }}
  {{- end }}
  {{- if semverCompare ">=1.26-0" $root.Capabilities.KubeVersion.Version }}
  # Exit 1 (an image missing, or --strict and an archive failed) and 2 (the node or the values
  # are wrong) recur on a retry: they fail the Job at once, whatever backoffLimit says. A pod
  # evicted or preempted (DisruptionTarget) is retried without counting as a failure.
  podFailurePolicy:
    rules:
      - action: FailJob
        onExitCodes:
          containerName: importer
          operator: In
          values: [1, 2]
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
            status: "True"
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
      {{- $podSC := deepCopy ($ip.podSecurityContext | default dict) }}
      {{- with $ip.seLinuxOptions }}
      {{- $_ := set $podSC "seLinuxOptions" . }}
      {{- end }}
      {{- with $podSC }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "offline-images.pullSecrets" $root }}
      imagePullSecrets:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $ip.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $ip.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "offline-images.affinity" (dict "root" $root "node" $node) }}
      affinity:
        {{- . | nindent 8 }}
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
            {{- include "offline-images.args" (dict "root" $root "prune" $prune) | nindent 12 }}
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
              value: {{ ternary "containerd" $ip.runtime (eq (include "offline-images.nativeContainerd" $root) "true") | quote }}
            - name: CONTAINERD_CLIENT
              value: {{ $ip.containerdClient | quote }}
            {{- if eq (include "offline-images.nativeContainerd" $root) "true" }}
            # containerd's gRPC API on the socket: no node root, no chroot.
            - name: CONTAINERD_ADDRESS
              value: {{ include "offline-images.socketPath" $root | quote }}
            {{- if not $ip.containerdRoot }}
            # No containerd root mounted: the disk preflight cannot see the node's free space.
            - name: NO_DISK_PREFLIGHT
              value: "true"
            {{- end }}
            {{- else }}
            {{- with $ip.containerdAddress }}
            - name: CONTAINERD_ADDRESS
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            - name: CONTAINERD_NAMESPACE
              value: {{ $ip.containerdNamespace | quote }}
            {{- with $ip.dockerHost }}
            - name: DOCKER_HOST
              value: {{ . | quote }}
            {{- end }}
            - name: LOG_FORMAT
              value: {{ $ip.logFormat | quote }}
            # How long to wait for another importer on this node before giving up (exit 2).
            - name: LOCK_TIMEOUT
              value: {{ include "offline-images.lockTimeout" $root | quote }}
            {{- if and (not $prune) .skipped }}
            # Nodes the chart left out, named in the log.
            - name: LEFT_OUT_NODES
              value: {{ join ";" .skipped | quote }}
            {{- end }}
            {{- if and $ip.bootstrap.enabled $ip.bootstrap.binarySha256 }}
            # The bundled binary refuses to run unless its sha256 is this one.
            - name: OFFLINE_IMAGES_BINARY_SHA256
              value: {{ $ip.bootstrap.binarySha256 | quote }}
            {{- end }}
            {{- with $ip.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # The importer writes its summary (and every failed archive and missing image) to
          # the termination message, shown by `kubectl get pod -o wide` and `describe pod`;
          # when it dies without one, the end of its log stands in.
          terminationMessagePath: /dev/termination-log
          terminationMessagePolicy: FallbackToLogsOnError
          volumeMounts:
            {{- if $needBundle }}
            - name: images
              mountPath: /images
              readOnly: true
              {{- if and $rro (eq $vol.type "hostPath") }}
              {{- $rro | nindent 14 }}
              {{- end }}
              {{- with $vol.subPath }}
              subPath: {{ . | quote }}
              {{- end }}
            {{- end }}
            {{- if eq $access "socket" }}
            - name: runtime-socket
              mountPath: {{ printf "/host%s" (include "offline-images.socketPath" $root) | quote }}
              readOnly: true
            {{- if and (eq (include "offline-images.nativeContainerd" $root) "true") $ip.containerdRoot }}
            # containerd's root, read-only, for the disk preflight's statfs alone.
            - name: containerd-root
              mountPath: {{ printf "/host%s" $ip.containerdRoot | quote }}
              readOnly: true
              {{- with $rro }}
              {{- . | nindent 14 }}
              {{- end }}
            {{- end }}
            {{- else }}
            - name: host-root
              mountPath: /host
              readOnly: true
              {{- with $rro }}
              {{- . | nindent 14 }}
              {{- end }}
            {{- end }}
            - name: tmp
              mountPath: /tmp
          {{- with $ip.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with include "offline-images.securityContext" $root }}
          securityContext:
            {{- . | nindent 12 }}
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
        {{- if eq $access "socket" }}
        # The runtime's socket alone: nothing else of the node is visible.
        - name: runtime-socket
          hostPath:
            path: {{ include "offline-images.socketPath" $root | quote }}
            type: Socket
        {{- if and (eq (include "offline-images.nativeContainerd" $root) "true") $ip.containerdRoot }}
        # containerd's root, read-only: the disk preflight reads its free space (statfs).
        - name: containerd-root
          hostPath:
            path: {{ $ip.containerdRoot | quote }}
            type: Directory
        {{- end }}
        {{- else }}
        # The node's root filesystem, read-only: the runtime sockets and the node's `ctr`
        # are found there.
        - name: host-root
          hostPath:
            path: /
            type: Directory
        {{- end }}
        # Scratch space; the container's own root filesystem is read-only.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end -}}
