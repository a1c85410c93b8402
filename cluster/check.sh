#!/usr/bin/env bash
# cluster/check.sh [CONFDIR] -- exercise the cluster from cluster/up.sh the way the library would:
# every Slurm command goes over ssh as the test user. Prints "N passed, M failed".
set -uo pipefail
D=$(cd "${1:-${DAGSTER_HPC_TEST_CLUSTER:-/var/tmp/dagster-hpc-cluster}}" && pwd); C=$D/client
SSH=(ssh -F "$C/ssh_config" -o BatchMode=yes)
pass=0; fail=0
ok() { echo "PASS $1"; pass=$((pass+1)); }
ko() { echo "FAIL $1 :: ${2:-}"; fail=$((fail+1)); }
r() { "${SSH[@]}" slurm-main "$@"; }          # run on the "login node" as the test user
# wait_state JOBID STATE... : poll scontrol until the job is in one of the states (30 s)
wait_state() { local j=$1; shift; local want="$*" s
  for ((i=0;i<120;i++)); do s=$(r "scontrol show job $j 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2")
    for w in $want; do [ "$s" = "$w" ] && { echo "$s"; return 0; }; done; sleep 0.25; done; echo "${s:-?}"; return 1; }

# shellcheck disable=SC2088 # expanded by the remote shell, in the test user's home
W='~/check'; r "mkdir -p $W && rm -f $W/*"
# 1 sbatch --wrap
j=$(r "cd $W && sbatch --parsable --wrap 'hostname; sleep 2'")
s=$(wait_state "$j" COMPLETED FAILED); out=$(r "cat $W/slurm-$j.out")
[ "$s" = COMPLETED ] && [[ $out == node* ]] && ok "sbatch --wrap ($j: $s, out=$out)" || ko "sbatch --wrap" "$s $out"
# 2 srun
out=$(r "timeout 60 srun -N2 -n2 bash -c 'echo \$SLURMD_NODENAME:\$(hostname)' | sort | tr '\n' ' '")
[[ $out == *node1:node1*node2:node2* ]] && ok "srun -N2 ($out)" || ko "srun -N2" "$out"
# 3 salloc --no-shell + srun --jobid + scancel
a=$(r "timeout 60 salloc --no-shell -N1 -t 5 2>&1 | grep -o 'Granted job allocation [0-9]*' | awk '{print \$4}'")
out=$(r "timeout 60 srun --jobid=$a bash -c 'echo step \$SLURM_STEP_ID of \$SLURM_JOB_ID'")
r "scancel $a"; s=$(wait_state "$a" CANCELLED)
[ "$out" = "step 0 of $a" ] && [ "$s" = CANCELLED ] && ok "salloc --no-shell/srun --jobid/scancel ($out, $s)" || ko "salloc" "$a $out $s"
# 4 scancel a running batch job
j=$(r "cd $W && sbatch --parsable --wrap 'sleep 300'"); wait_state "$j" RUNNING >/dev/null
r "scancel $j"; s=$(wait_state "$j" CANCELLED)
[ "$s" = CANCELLED ] && ok "scancel running ($j)" || ko "scancel running" "$s"
# 5 job array
aj=$(r "cd $W && sbatch --parsable --array=0-3 -o 'arr_%A_%a.out' --wrap 'echo idx=\$SLURM_ARRAY_TASK_ID; sleep 1'")
for t in 0 1 2 3; do wait_state "${aj}_$t" COMPLETED >/dev/null; done
out=$(r "cat $W/arr_${aj}_*.out | tr '\n' ' '")
[ "$out" = "idx=0 idx=1 idx=2 idx=3 " ] && ok "array 0-3 ($aj: $out)" || ko "array" "$out"
# 6 heterogeneous job (needs >= 2 nodes: backfill reserves whole nodes per component)
r "cat > $W/het.sh" <<'EOF'
#!/bin/bash
#SBATCH -J het -o het_%j.out
#SBATCH -n1 --mem=100
#SBATCH hetjob
#SBATCH -n2 --mem=100
srun --het-group=0 bash -c 'echo g0 $SLURMD_NODENAME'
srun --het-group=1 bash -c 'echo g1 $SLURMD_NODENAME' | head -1
EOF
hj=$(r "cd $W && sbatch --parsable het.sh"); s=$(wait_state "$hj" COMPLETED FAILED)
out=$(r "cat $W/het_$hj.out | tr '\n' ' '")
[ "$s" = COMPLETED ] && [[ $out == *g0*g1* ]] && ok "hetjob ($hj: $s, $out)" || ko "hetjob" "$s $out"
# 7 dependencies
d1=$(r "cd $W && sbatch --parsable --wrap 'sleep 1'"); d2=$(r "cd $W && sbatch --parsable --dependency=afterok:$d1 --wrap 'echo dep-ran'")
d3=$(r "cd $W && sbatch --parsable --wrap 'exit 3'"); d4=$(r "cd $W && sbatch --parsable --dependency=afterok:$d3 --wrap 'echo never'")
s2=$(wait_state "$d2" COMPLETED); s3=$(wait_state "$d3" FAILED)
for ((i=0;i<20;i++)); do rs=$(r "squeue -h -j $d4 -o %r 2>/dev/null || true"); [ "$rs" = DependencyNeverSatisfied ] && break; sleep 0.5; done
[ "$s2" = COMPLETED ] && [ "$s3" = FAILED ] && [ "$rs" = DependencyNeverSatisfied ] && ok "afterok ($d2 $s2; $d4 $rs)" || ko "afterok" "$s2 $s3 $rs"
r "scancel $d4"
# 8 sbatch -N2 with srun on both nodes
j=$(r "cd $W && sbatch --parsable -N2 --ntasks-per-node=1 -o multi_%j.out --wrap 'srun hostname | sort'"); s=$(wait_state "$j" COMPLETED FAILED)
out=$(r "cat $W/multi_$j.out | tr '\n' ' '")
[ "$out" = "node1 node2 " ] || [ "$(echo "$out" | wc -w)" = 2 ] && ok "sbatch -N2 + srun ($out)" || ko "sbatch -N2" "$out"
# 9 accounting: sstat on a running job, sacct on finished ones
if grep -q 'accounting_storage/slurmdbd' "$D/etc/slurm.conf"; then
  j=$(r "cd $W && sbatch --parsable --wrap 'python3 -c \"b=bytearray(80*2**20); import time; time.sleep(6)\"'"); wait_state "$j" RUNNING >/dev/null; sleep 4
  st=$(r "sstat -n -P -j $j.batch --format=JobID,MaxRSS"); wait_state "$j" COMPLETED >/dev/null; sleep 1
  sa=$(r "sacct -n -j $j,$d3 --format=JobID,State,Elapsed,MaxRSS,TotalCPU,AllocCPUS,ExitCode -P" | tr '\n' ' ')
  [[ $st == "$j.batch|"*K ]] && ok "sstat running ($st)" || ko "sstat" "$st"
  [[ $sa == *"$j|COMPLETED|"*"$j.batch|COMPLETED|"*K* && $sa == *"$d3|FAILED|"*"|3:0"* ]] && ok "sacct ($sa)" || ko "sacct" "$sa"
  sa=$(r "sacct -n -X -j $aj,$hj --format=JobID,State -P" | tr '\n' ' ')
  [[ $sa == *"${aj}_3|COMPLETED"*"$hj+1|COMPLETED"* ]] && ok "sacct array+het ($sa)" || ko "sacct array/het" "$sa"
fi
# 10 ssh variants
out=$(sshpass -p "$(. "$D/env.sh"; echo "$SLURM_TEST_PASS")" ssh -F "$C/ssh_config" -o PubkeyAuthentication=no -o PreferredAuthentications=password slurm-main 'squeue -h | wc -l' 2>&1)
[[ $out =~ ^[0-9]+$ ]] && ok "ssh password auth" || ko "ssh password" "$out"
out=$("${SSH[@]}" slurm-via-jump 'sinfo -h -N -o %N | sort -u | wc -l' 2>&1); [[ $out =~ ^[0-9]+$ ]] && ok "ssh ProxyJump ($out nodes)" || ko "ProxyJump" "$out"
out=$(SSH_ASKPASS="$C/otp-askpass.sh" SSH_ASKPASS_REQUIRE=force setsid -w ssh -F "$C/ssh_config" slurm-otp 'echo otp-ok' </dev/null 2>&1)
[ "$out" = otp-ok ] && ok "ssh key + TOTP keyboard-interactive" || ko "OTP" "$out"
out=$(sshpass -P 'Verification code' -p 000000 ssh -F "$C/ssh_config" slurm-otp true 2>&1); rc=$?
[ $rc != 0 ] && ok "ssh wrong TOTP refused (rc=$rc)" || ko "wrong TOTP accepted" "$out"
# (others log in to this sshd concurrently: compare client ports, not global "Accepted" counts)
CP=$(mktemp -u /tmp/check-cm-XXXXXX)
"${SSH[@]}" -o ControlMaster=yes -o ControlPath="$CP" -o ControlPersist=30 -fN slurm-main
ports=$(for i in 1 2 3; do "${SSH[@]}" -o ControlMaster=no -o ControlPath="$CP" slurm-main 'echo $SSH_CONNECTION' | awk '{print $2}'; done | sort -u)
chk=$("${SSH[@]}" -o ControlPath="$CP" -O check slurm-main 2>&1)
"${SSH[@]}" -o ControlPath="$CP" -O exit slurm-main 2>/dev/null
[ "$(echo "$ports" | wc -l)" = 1 ] && [ -n "$ports" ] && [[ $chk == Master\ running* ]] && \
  ok "ControlMaster (3 commands over one connection, port $ports)" || ko "ControlMaster" "ports=$ports $chk"
# 11 over-memory job killed: OUT_OF_MEMORY with CGROUP=1; FAILED + "Exceeded job memory limit" otherwise
j=$(r "cd $W && sbatch --parsable --mem=64M -t 2 -o oom_%j.out --wrap 'python3 -c \"b=bytearray(400*2**20); import time; time.sleep(20)\"'")
s=$(wait_state "$j" OUT_OF_MEMORY COMPLETED FAILED); out=$(r "cat $W/oom_$j.out")
if grep -q 'TaskPlugin=task/cgroup' "$D/etc/slurm.conf"; then
  [ "$s" = OUT_OF_MEMORY ] && ok "over-memory job -> OUT_OF_MEMORY ($j)" || ko "over-memory job" "$j ended $s"
else
  [ "$s" = FAILED ] && [[ $out == *"Exceeded job memory limit"* ]] && ok "over-memory job killed by OverMemoryKill ($j: $s)" || ko "over-memory job" "$j ended $s: $out"
fi
# 12 the pre-deployed payload env works for the test user on a compute node
if grep -q SLURM_TEST_PAYLOAD_PYTHON "$D/env.sh"; then
  py=$(. "$D/env.sh"; echo "$SLURM_TEST_PAYLOAD_PYTHON")
  out=$(r "timeout 60 srun -N1 $py -c 'import dagster_pipes, polars; print(dagster_pipes.__name__, polars.__version__)'" 2>&1)
  [[ $out == dagster_pipes* ]] && ok "payload env on a node ($out)" || ko "payload env" "$out"
fi
# 13 GPU partition (placeholder gres devices), MaxArraySize, a CPU + GPU hetjob
if grep -q '^GresTypes=gpu' "$D/etc/slurm.conf"; then
  gp=$(sed -n 's/^PartitionName=\([^ ]*\) Nodes=gpu.*/\1/p' "$D/etc/slurm.conf")
  j=$(r "cd $W && sbatch --parsable -p $gp --gpus=1 -o gpu_%j.out --wrap 'echo cuda=\$CUDA_VISIBLE_DEVICES'"); s=$(wait_state "$j" COMPLETED FAILED)
  out=$(r "cat $W/gpu_$j.out"); sleep 1; tres=$(r "sacct -n -X -j $j --format=AllocTRES%80 -P")
  [ "$s" = COMPLETED ] && [ "$out" = cuda=0 ] && [[ $tres == *gres/gpu=1* ]] && ok "gpu job ($j: $out, $tres)" || ko "gpu job" "$s $out $tres"
  out=$(r "sbatch --parsable -p debug --gpus=1 --wrap true" 2>&1); [[ $out == *"not available"* ]] && ok "--gpus refused on a CPU partition" || ko "--gpus on debug" "$out"
  mx=$(sed -n 's/^MaxArraySize=//p' "$D/etc/slurm.conf")
  out=$(r "sbatch --parsable --array=0-$mx --wrap true" 2>&1); [[ $out == *"Invalid job array"* ]] && ok "MaxArraySize=$mx enforced" || ko "MaxArraySize" "$out"
  r "cat > $W/hetgpu.sh" <<EOF
#!/bin/bash
#SBATCH -J hetgpu -o hetgpu_%j.out
#SBATCH -p debug -n1 --mem=100
#SBATCH hetjob
#SBATCH -p $gp -n1 --mem=100 --gpus=1
srun --het-group=0 bash -c 'echo c0 \$SLURMD_NODENAME' &
srun --het-group=1 bash -c 'echo c1 \$SLURMD_NODENAME gpu=\$CUDA_VISIBLE_DEVICES' &
wait
EOF
  hj=$(r "cd $W && sbatch --parsable hetgpu.sh"); s=$(wait_state "$hj" COMPLETED FAILED)
  out=$(r "sort $W/hetgpu_$hj.out | tr '\n' ' '")
  [ "$s" = COMPLETED ] && [[ $out == "c0 node"*"c1 gpu"*gpu=0* ]] && ok "CPU + GPU hetjob ($hj: $out)" || ko "CPU + GPU hetjob" "$s $out"
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
