#!/usr/bin/env bash
# Point a MinIO bucket's ObjectCreated notifications at the ai2text gateway.
# Usage: MINIO_URL=http://minio:9000 MINIO_ROOT_USER=... MINIO_ROOT_PASSWORD=... \
#        AI2TEXT_WEBHOOK__TOKEN=... GATEWAY_URL=http://ai2text-gateway:8000 \
#        BUCKET=uploads PREFIX=incoming/ ./setup-webhook.sh
set -euo pipefail
: "${MINIO_URL:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${AI2TEXT_WEBHOOK__TOKEN:?}" "${GATEWAY_URL:?}" "${BUCKET:?}"
PREFIX="${PREFIX:-}"
QUEUE_DIR="${QUEUE_DIR:-/data/.minio-notify/ai2text}"

mc alias set ai2text-minio "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc admin config set ai2text-minio notify_webhook:ai2text \
    endpoint="${GATEWAY_URL%/}/v1/events/s3" \
    auth_token="$AI2TEXT_WEBHOOK__TOKEN" \
    queue_dir="$QUEUE_DIR" \
    queue_limit="100000"
mc admin service restart ai2text-minio
mc mb --ignore-existing "ai2text-minio/$BUCKET"
if [[ -n "$PREFIX" ]]; then
    mc event add "ai2text-minio/$BUCKET" arn:minio:sqs::ai2text:webhook --event put --prefix "$PREFIX"
else
    mc event add "ai2text-minio/$BUCKET" arn:minio:sqs::ai2text:webhook --event put
fi
mc event ls "ai2text-minio/$BUCKET"
