"""Ray cluster-launcher configs for autoscaled cloud VMs (data files: aws.yaml, gcp.yaml)."""
