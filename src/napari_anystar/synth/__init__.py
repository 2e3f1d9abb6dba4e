"""The AnyStar generative model: label maps, appearance, augmentation A(.), named generators."""
