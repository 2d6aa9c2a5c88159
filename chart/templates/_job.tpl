{{/*
How the import pod reaches the node's runtime. Pass a dict "root" and "runtime" (the Job's
runtime: auto, containerd or docker, see offline-images.jobRuntime):
  socket    only the runtime's socket, at /host<path>: Docker (the Engine API needs nothing
            else), and containerd with containerdClient native (the gRPC API on the socket);
  probe     runtime auto with the native client: the node's /run, read-only, at /host/run and
            /host/var/run, where the sockets of containerd (kubeadm, k3s/RKE2, k0s), Docker and
            cri-dockerd are. The importer probes them and takes the runtime the kubelet reads.
            /run is a directory on every Linux node, so the mount never keeps the pod from
            starting and creates nothing on the node, which mounting each candidate socket
            cannot do: type Socket fails the pod where that socket is absent, and type ""
            (no check) lets the runtime create a directory at the socket's path (containerd's
            CRI plugin and Docker make a missing hostPath a directory);
  nodeRoot  the node's root filesystem, read-only at /host: the runtime sockets are probed
            there and the node's `ctr` runs chrooted into it (containerdClient ctr).
  crio      the node's root filesystem, read-write at /host: CRI-O's images are in
            containers-storage (/var/lib/containers/storage on the node), which no daemon owns;
            the importer runs the node's podman chrooted into the node root, and podman writes
            the storage itself (runtime crio).
*/}}
{{- define "offline-images.hostAccess" -}}
{{- $ip := .root.Values.imagePull -}}
{{- if eq .runtime "crio" -}}
crio
{{- else if eq .runtime "docker" -}}
socket
{{- else if eq $ip.containerdClient "ctr" -}}
nodeRoot
{{- else if eq .runtime "containerd" -}}
socket
{{- else -}}
probe
{{- end -}}
{{- end -}}

{{/* "true" when the Job may reach containerd through its gRPC API (containerdClient native,
runtime not docker). Pass a dict "root" and "runtime". */}}
{{- define "offline-images.nativeContainerd" -}}
{{- if and (eq .root.Values.imagePull.containerdClient "native") (not (has .runtime (list "docker" "crio"))) -}}
true
{{- end -}}
{{- end -}}

{{/* The node path of the runtime socket mounted in socket mode. Pass a dict "root" and "runtime". */}}
{{- define "offline-images.socketPath" -}}
{{- $ip := .root.Values.imagePull -}}
{{- if eq .runtime "docker" -}}
{{- $ip.dockerHost | default "unix:///var/run/docker.sock" | trimPrefix "unix://" -}}
{{- else -}}
{{- $ip.containerdAddress | default "/run/containerd/containerd.sock" -}}
{{- end -}}
{{- end -}}

{{/*
The sockets a probe-mode pod mounts one by one, beside /run: containerdAddress and dockerHost
when they are set to a path outside /run and /var/run (MicroK8s keeps containerd's under
/var/snap). A socket named in the values is expected there: type Socket. As JSON:
{"<volume name>": "<node path>"}.
*/}}
{{- define "offline-images.probeSockets" -}}
{{- $ip := .Values.imagePull -}}
{{- $out := dict -}}
{{- range $name, $path := dict "containerd-socket" $ip.containerdAddress "docker-socket" ($ip.dockerHost | trimPrefix "unix://") -}}
{{- if and $path (not (hasPrefix "/run/" $path)) (not (hasPrefix "/var/run/" $path)) -}}
{{- $_ := set $out $name $path -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
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

{{/* The container security context; without SYS_CHROOT, which only the node's chrooted `ctr`
needs, unless the node root is mounted. With access crio: imagePull.crioCapabilities and
SYS_CHROOT added, and uid 0 whatever podSecurityContext says (see values.yaml).
Pass a dict "root" and "access" (offline-images.hostAccess). */}}
{{- define "offline-images.securityContext" -}}
{{- $sc := deepCopy (.root.Values.imagePull.securityContext | default dict) -}}
{{- if eq .access "crio" -}}
{{- $caps := get $sc "capabilities" | default dict -}}
{{- $add := concat (get $caps "add" | default list) (list "SYS_CHROOT") (.root.Values.imagePull.crioCapabilities | default list) | uniq -}}
{{- $_ := set $caps "add" $add -}}
{{- $_ = set $sc "capabilities" $caps -}}
{{- $_ = set $sc "runAsUser" 0 -}}
{{- $_ = set $sc "runAsGroup" 0 -}}
{{- $_ = set $sc "runAsNonRoot" false -}}
{{- else if and (ne .access "nodeRoot") (hasKey $sc "capabilities") -}}
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

{{/*
The flags of `import` the chart sets itself (as arguments or through their environment
variables), each with the value that sets it. extraArgs may not give them: the importer refuses
a flag given twice (exit 2), and a flag given once would override the chart's environment
variable while the pod's mounts still follow the value. --require adds to requiredImages and
may be given.
*/}}
{{- define "offline-images.chartFlags" -}}
{{- dict
  "--jobs" "set imagePull.jobs instead"
  "--strict" "set imagePull.strict instead"
  "--images-path" "set imagePull.imagesPath or imagePull.imagesVolume instead (the bundle is mounted at /images)"
  "--runtime" "set imagePull.runtime instead (the pod mounts that runtime's socket)"
  "--containerd-address" "set imagePull.containerdAddress instead (the pod mounts that socket)"
  "--containerd-client" "set imagePull.containerdClient instead"
  "--namespace" "set imagePull.containerdNamespace instead"
  "--docker-host" "set imagePull.dockerHost instead (the pod mounts that socket)"
  "--host-root" "the node's paths are mounted under /host"
  "--log-format" "set imagePull.logFormat instead"
  "--release" "it is the release name, which prune relies on"
  "--left-out-node" "it names the nodes allNodes or nodes left out"
  | toJson -}}
{{- end -}}

{{/* Fail on an extraArgs item that gives a flag of offline-images.chartFlags. */}}
{{- define "offline-images.checkExtraArgs" -}}
{{- $owned := include "offline-images.chartFlags" . | fromJson -}}
{{- range $arg := .Values.imagePull.extraArgs -}}
{{- $flag := first (splitList "=" (toString $arg)) -}}
{{- with get $owned $flag -}}
{{- fail (printf "imagePull.extraArgs: %q: the chart sets %s itself; %s" (toString $arg) $flag .) -}}
{{- end -}}
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
{{- include "offline-images.checkExtraArgs" .root }}
{{- if $ip.jobs }}
- --jobs={{ int $ip.jobs }}
{{- end }}
{{- if $ip.strict }}
- --strict
{{- end }}
{{- range $ip.requiredImages }}
- {{ printf "--require=%s" . | quote }}
{{- end }}
{{- if include "offline-images.verifySource" .root }}
- {{ printf "--verify-key=%s" (include "offline-images.verifyKeyPath" .root) | quote }}
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
  runtime the runtime chosen for the node (offline-images.nodePlan); empty: imagePull.runtime
  arch    in bootstrap mode, the node architecture whose bundled importer the Job runs
          (offline-images.jobList); empty: the bundle's default binary. A Job not pinned to a
          node is then named <base>-<arch> and selects nodes of that architecture.
  inList  true when the Job is an item of a List document (Helm prints no log for those)
*/}}
{{- define "offline-images.job" -}}
{{- $root := .root }}
{{- $ip := $root.Values.imagePull }}
{{- $vol := $ip.imagesVolume }}
{{- $node := .node }}
{{- $prune := .prune }}
{{- $runtime := .runtime | default $ip.runtime }}
{{- $rt := dict "root" $root "runtime" $runtime }}
{{- $access := include "offline-images.hostAccess" $rt }}
{{- $native := eq (include "offline-images.nativeContainerd" $rt) "true" }}
{{- $socketPath := include "offline-images.socketPath" $rt }}
{{- $probeSockets := ternary (include "offline-images.probeSockets" $root | fromJson) dict (eq $access "probe") }}
{{- $component := ternary "image-prune" "image-import" $prune }}
{{- $base := ternary (include "offline-images.pruneName" $root) (include "offline-images.importName" $root) $prune }}
{{- $arch := .arch | default "" }}
{{- $name := include "offline-images.nodeJobName" (dict "base" $base "node" $node) }}
{{- if not $node }}
{{- $name = include "offline-images.archJobName" (dict "base" $base "arch" $arch) }}
{{- end }}
{{- $logs := not (or $node .inList) }}
{{- $hookArgs := dict "root" $root "offset" 0 "outputLogs" $logs "importJob" true }}
{{- if $prune }}
{{- $hookArgs = dict "root" $root "offset" 0 "hook" "post-delete" "deletePolicy" $ip.prune.deletePolicy "outputLogs" $logs }}
{{- end }}
{{- $nodeSelector := $ip.nodeSelector | default dict }}
{{- if and $arch (not $node) }}
{{- $nodeSelector = merge (dict "kubernetes.io/arch" $arch) $nodeSelector }}
{{- end }}
{{- $pin := "" }}
{{- if $ip.bootstrap.enabled }}
{{- $pin = include "offline-images.bootstrapSha256" (dict "root" $root "arch" $arch) }}
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
    {{- with $arch }}
    offline-images.io/arch: {{ . | quote }}
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
      {{- else }}
      {{- if eq $access "crio" }}
      {{- /* container_t may not write containers-storage (container_var_lib_t) on an
      SELinux node (RHCOS): spc_t, the type CRI-O gives a privileged container. */}}
      {{- $_ := set $podSC "seLinuxOptions" (dict "type" "spc_t") }}
      {{- end }}
      {{- end }}
      {{- with $podSC }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "offline-images.pullSecrets" $root }}
      imagePullSecrets:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $nodeSelector }}
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
          {{- $binary := include "offline-images.bootstrapBinary" (dict "arch" $arch) }}
          # The importer binary the bundle carries (written by `offline-images export`); it
          # checks itself against {{ trimPrefix "/images/" $binary }}.sha256 before it runs.
          command: [{{ $binary | quote }}]
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
            {{- if eq $access "probe" }}
            # auto: the importer probes the sockets under the node's /run and takes the runtime
            # the kubelet reads (Docker first where a cri-dockerd socket is).
            {{- end }}
            {{- if eq $access "crio" }}
            # CRI-O reads containers-storage: the importer runs the node's podman, chrooted
            # into the node root, so it takes the node's storage.conf (--runtime podman).
            - name: IMAGE_RUNTIME
              value: "podman"
            {{- else }}
            - name: IMAGE_RUNTIME
              value: {{ $runtime | quote }}
            {{- end }}
            - name: CONTAINERD_CLIENT
              value: {{ $ip.containerdClient | quote }}
            {{- if and $native (eq $access "socket") }}
            # containerd's gRPC API on the socket: no node root, no chroot.
            - name: CONTAINERD_ADDRESS
              value: {{ $socketPath | quote }}
            {{- else if not (has $runtime (list "docker" "crio")) }}
            {{- with $ip.containerdAddress }}
            - name: CONTAINERD_ADDRESS
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if and $native (not $ip.containerdRoot) }}
            # No containerd root mounted: the disk preflight cannot see the node's free space.
            - name: NO_DISK_PREFLIGHT
              value: "true"
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
            {{- with $pin }}
            # The bundled binary refuses to run unless its sha256 is this one.
            - name: OFFLINE_IMAGES_BINARY_SHA256
              value: {{ . | quote }}
            {{- end }}
            {{- with $ip.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # The importer writes its summary (and every failed archive and missing image) to
          # the termination message: the pod's status.containerStatuses[].state.terminated.message,
          # shown by `kubectl describe pod` (Message) and `kubectl get pod -o jsonpath`; when
          # it dies without one, the end of its log stands in.
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
              mountPath: {{ printf "/host%s" $socketPath | quote }}
              readOnly: true
            {{- else if eq $access "probe" }}
            {{- /* /var/run is a symlink to /run on the node: both node paths work. */}}
            {{- range $at := list "/host/run" "/host/var/run" }}
            - name: node-run
              mountPath: {{ $at }}
              readOnly: true
              {{- with $rro }}
              {{- . | nindent 14 }}
              {{- end }}
            {{- end }}
            {{- range $name, $path := $probeSockets }}
            - name: {{ $name }}
              mountPath: {{ printf "/host%s" $path | quote }}
              readOnly: true
            {{- end }}
            {{- end }}
            {{- if and $native $ip.containerdRoot (ne $access "nodeRoot") }}
            # containerd's root, read-only, for the disk preflight's statfs alone.
            - name: containerd-root
              mountPath: {{ printf "/host%s" $ip.containerdRoot | quote }}
              readOnly: true
              {{- with $rro }}
              {{- . | nindent 14 }}
              {{- end }}
            {{- end }}
            {{- if eq $access "nodeRoot" }}
            - name: host-root
              mountPath: /host
              readOnly: true
              {{- with $rro }}
              {{- . | nindent 14 }}
              {{- end }}
            {{- else if eq $access "crio" }}
            # Read-write: podman, chrooted here, writes the node's containers-storage and
            # its temporary copy of each archive (/var/tmp).
            - name: host-root
              mountPath: /host
            {{- end }}
            - name: tmp
              mountPath: /tmp
            {{- if not $prune }}
            {{- include "offline-images.verifyMount" $root | indent 12 }}
            {{- end }}
          {{- with $ip.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with include "offline-images.securityContext" (dict "root" $root "access" $access) }}
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
            path: {{ $socketPath | quote }}
            type: Socket
        {{- else if eq $access "probe" }}
        # The node's /run, read-only, where the runtime sockets are: a directory on every Linux
        # node, so the pod starts whichever runtime the node has, and nothing is created there.
        - name: node-run
          hostPath:
            path: /run
            type: Directory
        {{- range $name, $path := $probeSockets }}
        # A socket the values name outside /run.
        - name: {{ $name }}
          hostPath:
            path: {{ $path | quote }}
            type: Socket
        {{- end }}
        {{- end }}
        {{- if and $native $ip.containerdRoot (ne $access "nodeRoot") }}
        # containerd's root, read-only: the disk preflight reads its free space (statfs).
        - name: containerd-root
          hostPath:
            path: {{ $ip.containerdRoot | quote }}
            type: Directory
        {{- end }}
        {{- if eq $access "nodeRoot" }}
        # The node's root filesystem, read-only: the runtime sockets and the node's `ctr`
        # are found there.
        - name: host-root
          hostPath:
            path: /
            type: Directory
        {{- else if eq $access "crio" }}
        # The node's root filesystem, read-write: the node's podman runs chrooted into it
        # and writes the containers-storage CRI-O reads (runtime crio).
        - name: host-root
          hostPath:
            path: /
            type: Directory
        {{- end }}
        # Scratch space; the container's own root filesystem is read-only.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if not $prune }}
        {{- include "offline-images.verifyVolume" $root | indent 8 }}
        {{- end }}
{{- end -}}
