# shellcheck shell=sh
# dagster-hpc's final accounting record of ONE ended job, in one round trip
# (backends/slurm_sacct.final_record_command).
# Run as: sh -c "$(cat final_record.sh)" final_record.sh JOB FIELDS FIELDS_WITH_TRES START \
#         SQUEUE_PAUSES SACCT_PAUSES MARK
# 1. Ask slurmctld (squeue, a few ms) after each of SQUEUE_PAUSES until it lists JOB as ended:
#    slurmdbd records the end 0.1-0.2 s after squeue shows it, so a sacct sent before that
#    mostly finds RUNNING rows and costs a second round trip.
# 2. While slurmctld lists JOB, print "MARK|JOB|STATE|PARTITION|TRES|" and ask sacct for FIELDS,
#    which leave out AllocTRES (that one field makes sacct read slurmdbd's TRES table first:
#    ~80 ms of a ~170 ms query); a job slurmctld has forgotten gets FIELDS_WITH_TRES.
# 3. Ask sacct again after each of SACCT_PAUSES while one of its rows is not terminal yet.
# sacct's stderr is left alone: the caller reads "accounting disabled/unreachable" from it.
job=$1
start=$4
q=""
for pause in $5; do
  sleep "$pause"
  q=$(squeue --noheader --states=all --jobs "$job" --Format='State:|,Partition:|,tres-alloc:|' 2>/dev/null) || q=""
  case $q in
    PENDING*|CONFIGURING*|RUNNING*|COMPLETING*|SUSPENDED*|RESIZING*|SIGNALING*|STAGE_OUT*|REQUEUE*) ;;
    *) break ;;
  esac
done
fields=$3
case $q in *'|'*) printf '%s|%s|%s\n' "$7" "$job" "${q%%
*}"; fields=$2 ;; esac
ask() { sacct --parsable2 --noheader --jobs "$job" --starttime "$start" --format "$fields"; }
r=$(ask)
for pause in $6; do
  case $r in
    *'|PENDING|'*|*'|RUNNING|'*|*'|COMPLETING|'*|*'|REQUEUED|'*) ;;
    *) break ;;
  esac
  sleep "$pause"
  r=$(ask)
done
printf '%s\n' "$r"
