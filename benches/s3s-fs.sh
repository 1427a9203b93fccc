# Sourced by the bucket benchmarks: start_s3 DIR starts s3s-fs on a loopback port serving DIR
# (with a bucket `bench`), sets s3pid, and exports the AWS_* variables that reach it.
# S3_NICE=19 runs it at that niceness: on a machine this small the S3 server otherwise takes
# CPU from the node under test, which a bucket on other machines never does.
start_s3() {
  local dir="$1" port=""
  mkdir -p "$dir/s3/bench"
  RUST_LOG=info NO_COLOR=1 nice -n "${S3_NICE:-0}" s3s-fs --host 127.0.0.1 --port 0 --access-key bench --secret-key bench-secret-key \
    "$dir/s3" >"$dir/s3s-fs.log" 2>&1 &
  s3pid=$!
  for _ in $(seq 200); do
    port="$(sed -n 's|.*server is running at http://127.0.0.1:\([0-9]*\).*|\1|p' "$dir/s3s-fs.log")"
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "s3s-fs did not start:"; cat "$dir/s3s-fs.log"; exit 1; }
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key
}
