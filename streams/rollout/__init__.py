"""The rollout stage: the canary state machine (`agents.rollout`) on `devline.rollouts`."""
