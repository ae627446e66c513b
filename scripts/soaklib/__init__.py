"""The parts of scripts/soak: canary loopers and stream churn against a real engine and agents."""
