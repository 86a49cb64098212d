"""The models' inference paths in numpy (scipy, faiss): what the trainer's Keras models export, as served."""
