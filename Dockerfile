# syntax=docker/dockerfile:1
# One image for every service and job; the command picks which one runs (docker-compose.yml).
# Checked by hadolint in tests/deploy/test_compose.py.

# The project as a wheel: the image installs that, not the source tree, so that what runs is
# what a non-editable install holds (package data and migrations included).
FROM python:3.11.14-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INCENTIVES_ENVIRONMENT=production
# A fixed UID and GID, so that volumes and Kubernetes' runAsUser can name them.
RUN groupadd --system --gid 10001 incentives \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
    --shell /usr/sbin/nologin incentives
# The dependencies at the versions pyproject.toml pins; the wheel itself is only mounted
# for the install and never becomes a layer.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl
WORKDIR /app
USER 10001:10001
EXPOSE 8000
CMD ["uvicorn", "services.voucher.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "5"]
