"""The training loop: setup and outline (training_loop), one step (train_step), the state it holds
(train_state), snapshots, logs, the run directory and the real-image stream."""
