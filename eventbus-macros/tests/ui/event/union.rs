use eventbus::Event;

#[derive(Event)]
#[event("number")]
union Number {
    int: u32,
    float: f32,
}

fn main() {}
