//! The Examples section of every verb's `--help` (a test checks each verb has one).

pub const FERRY: &str = "\
Examples:
  ferry init --region eu-west-1                 # create the job table
  ferry apply -f jobs/                          # create or update the jobs in a directory
  ferry get -w                                  # watch progress
  ferry wait logs-mirror --for=condition=Complete --timeout=2h";

pub const INIT: &str = "\
Examples:
  ferry init --region eu-west-1
  ferry init --table ferry-prod --region us-east-2";

pub const VALIDATE: &str = "\
Examples:
  ferry validate -f jobs/
  kustomize build overlays/prod | ferry validate -f -";

pub const APPLY: &str = "\
Examples:
  ferry apply -f jobs/
  kustomize build overlays/prod | ferry apply -f - --applyset prod --prune
  ferry apply -f jobs/ --prune -l team=data      # prune only jobs labelled team=data
  ferry apply -f jobs/ --dry-run=server          # check every write would be accepted
  ferry apply -f jobs/ --applyset prod --force-conflicts";

pub const DIFF: &str = "\
Examples:
  ferry diff -f jobs/
  git show HEAD:jobs/mirror.yaml | ferry diff -f -";

pub const GET: &str = "\
Examples:
  ferry get
  ferry get -l team=data,tier!=test -o wide
  ferry get -o name | xargs -n1 ferry describe
  ferry get logs-mirror -o yaml
  ferry get --no-headers -l team=data";

pub const DESCRIBE: &str = "\
Examples:
  ferry describe logs-mirror";

pub const DELETE: &str = "\
Examples:
  ferry delete logs-mirror --wait --timeout=10m
  ferry delete -f jobs/old.yaml
  ferry delete -l team=data --ignore-not-found";

pub const WAIT: &str = "\
Examples:
  ferry wait logs-mirror --for=condition=Complete --timeout=2h
  ferry wait a b c --for=phase=Succeeded --timeout=30m
  ferry wait logs-mirror --for=delete --timeout=5m

Exit codes: 0 every job met the condition; 1 a job reached a phase it cannot leave on its own
(Failed, Blocked) without meeting it, or the timeout passed first (kubectl's exit code for a
timeout); the message says which.";

pub const SUSPEND: &str = "\
Examples:
  ferry suspend logs-mirror                     # stops its tasks and its schedule

A later `ferry apply` of a file without `suspend: true` resumes it, as with kubectl.";

pub const RESUME: &str = "\
Examples:
  ferry resume logs-mirror";

pub const RERUN: &str = "\
Examples:
  ferry rerun logs-mirror                       # copy again, same spec
  ferry rerun logs-mirror && ferry wait logs-mirror --for=condition=Complete";

pub const SCHEMA: &str = "\
Examples:
  ferry schema > schemas/copyjob.schema.json";

pub const POLICIES: &str = "\
Examples:
  ferry policies -f jobs/mirror.yaml --operator-account 123456789012 --region eu-west-1";

pub const WORKER: &str = "\
Examples:
  FERRY_JOB=logs-mirror FERRY_RUN=0a1b2c3d-g1r1 ferry worker   # as the operator's tasks run it";

pub const OPERATOR: &str = "\
Examples:
  ferry operator --region eu-west-1 --subnets subnet-1,subnet-2 \\
    --allow-source 111111111111:logs-* --allow-destination-account 222222222222
  ferry operator --allow-any --listen 127.0.0.1:9090   # emulator only";

pub const LOCAL_AGENT: &str = "\
Examples:
  ferry local-agent --cluster ferry --create-cluster";

pub const COMPLETION: &str = "\
Examples:
  source <(ferry completion bash)
  ferry completion zsh > \"${fpath[1]}/_ferry\"
  ferry completion fish > ~/.config/fish/completions/ferry.fish";

pub const VERSION: &str = "\
Examples:
  ferry version";

pub const MAN: &str = "\
Examples:
  ferry man --dir /usr/local/share/man/man1 && man ferry-apply";
