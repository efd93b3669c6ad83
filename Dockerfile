# One image for every service; the command picks which one runs.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-cache-dir .
ENV INCENTIVES_ENVIRONMENT=production
EXPOSE 8000
CMD ["uvicorn", "services.voucher.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
